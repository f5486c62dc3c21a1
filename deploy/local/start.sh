#!/usr/bin/env bash
# `npm start`: installs what a fresh machine lacks, builds, then runs the whole local system.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
# The Node.js install.sh provides, whatever the caller's PATH puts first.
[ ! -x /usr/local/bin/node ] || export PATH="/usr/local/bin:$PATH"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[start] npm ci" >&2
  npm ci --no-audit --no-fund
fi
echo "[start] building" >&2
npx tsc -b
exec node deploy/local/start.js "$@"
