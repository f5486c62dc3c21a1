#!/usr/bin/env bash
# Lints the protos (buf STANDARD + COMMENTS) and regenerates their TypeScript (ts-proto, grpc-js
# services) into services/common/src/gen. With --check (npm test), also fails when the protos break
# the contract of the last commit of main (`buf breaking`, FILE rules; PROTO_BREAKING_AGAINST names
# another git ref) or when the committed code differs from a fresh run.
set -euo pipefail
cd "$(dirname "$0")"
OUT=../services/common/src/gen
npx buf lint
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  # Against main's last commit; a checkout without a main branch (a detached CI clone) compares
  # with HEAD, i.e. what is not committed yet.
  against=${PROTO_BREAKING_AGAINST:-main}
  git rev-parse --verify -q "$against^{commit}" >/dev/null || against=HEAD
  mkdir "$tmp/against"
  git -C .. archive "$against" proto | tar -x -C "$tmp/against"
  npx buf breaking . --against "$tmp/against/proto"
  echo "no breaking change against $against ($(git rev-parse --short "$against"))"
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
