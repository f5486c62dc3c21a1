#!/usr/bin/env bash
# Lints the protos and regenerates their TypeScript (ts-proto, grpc-js services) into
# services/common/src/gen. With --check, fails when the committed code differs from a fresh run.
set -euo pipefail
cd "$(dirname "$0")"
OUT=../services/common/src/gen
npx buf lint
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cp -r "$OUT" "$tmp/before"
  rm -rf "$OUT" && npx buf generate
  if ! diff -r "$tmp/before" "$OUT" >/dev/null; then
    diff -r "$tmp/before" "$OUT" | head -40
    echo "generated code is stale: run 'npm run proto' and commit" >&2
    exit 1
  fi
  echo "generated code is up to date"
else
  rm -rf "$OUT" && npx buf generate
fi
