#!/usr/bin/env bash
# `npm test`: builds, checks the generated protos are current, builds the container images, then
# runs the unit, integration, end-to-end and image suites against real Redis, FerretDB, Jaeger,
# processes and containers, and the Kubernetes manifests against a real API server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/install.sh
# The Node.js install.sh provides, whatever the caller's PATH puts first.
[ ! -x /usr/local/bin/node ] || export PATH="/usr/local/bin:$PATH"
# etcd, kube-apiserver and kubectl for the Kubernetes manifest tests (built once, cached).
bash deploy/k8s/tools/install.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
bash proto/generate.sh --check
npx tsc -b
# The tests themselves (swc compiles them for jest without checking types): every test file,
# unit tests beside the code included, type-checked against the built packages.
npx tsc -p test/tsconfig.json
# The container images the `images` suite runs (podman; cached: a rebuild after a source change
# redoes the TypeScript build and the changed images' last layers only).
bash deploy/images/build.sh
# Suites run one file at a time: each file starts its own processes on free ports, and two
# cores do not run several meshes at once without starving them.
npx jest --runInBand "$@"
