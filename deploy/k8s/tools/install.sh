#!/usr/bin/env bash
# Installs what the Kubernetes manifest and autoscaling tests need, idempotently: Debian's etcd, and
# kube-apiserver, kube-controller-manager and kubectl (kustomize is built into kubectl) v$K8S_VERSION
# and prometheus-adapter v$ADAPTER_VERSION built from the Go module proxy, cached in $MESH_CACHE/bin
# so a second run does not rebuild them.
#
# `go install k8s.io/kubernetes/cmd/...` refuses the module's replace directives (its staging
# modules point at ./staging/src/...), so a wrapper module requires k8s.io/kubernetes and pins each
# staging module to its published release of the same minor version.
set -euo pipefail
# The newest 1.31 release whose staging modules the Go module proxy serves here.
K8S_VERSION="${K8S_VERSION:-1.31.4}"
ADAPTER_VERSION="${ADAPTER_VERSION:-0.12.0}"
CACHE="${MESH_CACHE:-$HOME/.cache/agent-mesh}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
log() { printf '[k8s-install] %s\n' "$*" >&2; }

apt_pkgs=()
command -v etcd >/dev/null || apt_pkgs+=(etcd-server)
# The autoscaling loop: a front-proxy CA (openssl) and a network namespace for the adapter (ip).
command -v openssl >/dev/null || apt_pkgs+=(openssl)
command -v ip >/dev/null || apt_pkgs+=(iproute2)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${apt_pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  # The package starts a system etcd on 2379/2380; the tests run their own on free ports.
  { $SUDO systemctl disable --now etcd >/dev/null 2>&1 || $SUDO service etcd stop >/dev/null 2>&1; } || true
fi

tools=(kube-apiserver kube-controller-manager kubectl)
version_of() { if [ "$1" = kubectl ]; then "$BIN/kubectl" version --client 2>/dev/null; else "$BIN/$1" --version 2>/dev/null; fi; }
find_missing() {
  missing=()
  for t in "${tools[@]}"; do
    # Not `version_of | grep -q`: grep exits at its match, the writer gets SIGPIPE, and pipefail
    # then reports a working binary as missing (and it was rebuilt).
    v=""; [ -x "$BIN/$t" ] && v=$(version_of "$t" || true)
    grep -q "v$K8S_VERSION\b" <<<"$v" || missing+=("$t")
  done
}
# prometheus-adapter prints no version of its own: the build records it beside the binary.
adapter_ready() { [ -x "$BIN/prometheus-adapter" ] && [ "$(cat "$BIN/prometheus-adapter.version" 2>/dev/null)" = "v$ADAPTER_VERSION" ]; }
find_missing
if [ ${#missing[@]} -eq 0 ] && adapter_ready; then log "kubernetes binaries ready in $BIN"; exit 0; fi

# Two builds at once would race on the same directory: one builds, the other waits.
exec 9>"$CACHE/k8s-build.lock"
flock 9

# prometheus-adapter (the custom and resource metrics APIs the HPAs read, from Prometheus).
# `go install sigs.k8s.io/prometheus-adapter/cmd/adapter@v…` fails here (the proxy refuses the
# module's version list), but the module itself downloads: build ./cmd/adapter from a writable copy.
if ! adapter_ready; then
  log "building prometheus-adapter v$ADAPTER_VERSION from the Go module proxy (one time, several minutes; cached in $BIN)"
  src=$(go mod download -json "sigs.k8s.io/prometheus-adapter@v$ADAPTER_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  [ -n "$src" ] && [ -d "$src" ] || { log "go mod download gave no directory for prometheus-adapter"; exit 1; }
  d="$CACHE/build/prometheus-adapter-$ADAPTER_VERSION"
  rm -rf "$d" && mkdir -p "$(dirname "$d")" && cp -r "$src" "$d" && chmod -R u+w "$d"
  (cd "$d" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/prometheus-adapter.tmp" ./cmd/adapter)
  # Its --help exits 2 (pflag): check that it printed its own flags.
  help=$("$BIN/prometheus-adapter.tmp" --help 2>&1 || true)
  grep -q -- --prometheus-url <<<"$help" || { log "built prometheus-adapter does not start"; exit 1; }
  mv "$BIN/prometheus-adapter.tmp" "$BIN/prometheus-adapter"
  echo "v$ADAPTER_VERSION" > "$BIN/prometheus-adapter.version"
  rm -rf "$d"
fi

find_missing
if [ ${#missing[@]} -eq 0 ]; then log "kubernetes binaries ready in $BIN"; exit 0; fi

log "building ${missing[*]} v$K8S_VERSION from the Go module proxy (one time, several minutes; cached in $BIN)"
d="$CACHE/build/k8s-$K8S_VERSION"
rm -rf "$d" && mkdir -p "$d"
cd "$d"
go mod init local/k8s-tools >/dev/null 2>&1
go mod edit -require "k8s.io/kubernetes@v$K8S_VERSION"
# kubernetes' own go.mod lists its staging modules as `k8s.io/X => ./staging/src/k8s.io/X`.
kmod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
staging=$(sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$kmod")
[ -n "$staging" ] || { log "no staging modules found in $kmod"; exit 1; }
for m in $staging; do go mod edit -replace "$m=$m@v0.${K8S_VERSION#1.}"; done
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >/dev/null 2>&1 || go mod tidy
minor=${K8S_VERSION#1.}; minor=${minor%%.*}
v=k8s.io/component-base/version
ldflags="-s -w -X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
for t in "${missing[@]}"; do
  log "go build $t"
  CGO_ENABLED=0 go build -trimpath -tags tools -ldflags "$ldflags" -o "$BIN/$t.tmp" "k8s.io/kubernetes/cmd/$t"
  mv "$BIN/$t.tmp" "$BIN/$t"
done
# A binary that cannot start is worse than none: check each once.
find_missing
[ ${#missing[@]} -eq 0 ] || { log "built but not runnable: ${missing[*]}"; exit 1; }
log "kubernetes binaries ready in $BIN"
