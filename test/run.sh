#!/usr/bin/env bash
# `npm test`: builds, checks the generated protos are current, then runs the unit, integration
# and end-to-end suites against real Redis, FerretDB, Jaeger and processes, and the Kubernetes
# manifests against a real API server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/install.sh
# etcd, kube-apiserver and kubectl for the Kubernetes manifest tests (built once, cached).
bash deploy/k8s/tools/install.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
bash proto/generate.sh --check
npx tsc -b
# Suites run one file at a time: each file starts its own processes on free ports, and two
# cores do not run several meshes at once without starving them.
npx jest --runInBand "$@"
