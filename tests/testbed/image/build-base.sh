#!/usr/bin/env bash
# Build the Dockerfile's base image, python:3.11-slim-bookworm, offline-friendly and without a registry:
# a Debian bookworm rootfs (mmdebstrap: python3 from Debian) plus pip/setuptools/wheel from the package index
# (the host's own pip configuration), committed into containers-storage as
# docker.io/library/python:3.11-slim-bookworm, so the Dockerfile's `FROM python:3.11-slim-bookworm` resolves
# locally under `buildah bud --pull=never` (build-operator.sh).
#
# Idempotent: an existing image is kept (BASE_FORCE=1 rebuilds it). Downloaded .debs and wheels are cached in
# $CACHE/image-base/{debs,wheels}. Reproducible: SOURCE_DATE_EPOCH fixes the rootfs mtimes and the image's
# created time, so with the same Debian package versions a rebuild gives the same image ID (and the operator
# image's layer cache stays valid).
#
# Needs root and: apt-get install -y --no-install-recommends mmdebstrap buildah (scripts/bootstrap.sh).
# The apt sources are read from the host's configuration at run time; nothing names a mirror here.
# Knobs: BASE_IMAGE, BASE_APT_SOURCES (an apt sources file), BASE_FORCE, SOURCE_DATE_EPOCH, BASE_PIP_VERSION,
#        BASE_SETUPTOOLS_VERSION, BASE_WHEEL_VERSION (no PIP_*: pip reads those variables itself).
set -euo pipefail

CACHE=${DITTOFS_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-operator/testbed}
DIR="$CACHE/image-base"
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
# The versions the official python:3.11 images ship (pip from 3.11's ensurepip; setuptools/wheel of 2025).
BASE_PIP_VERSION=${BASE_PIP_VERSION:-24.0}
BASE_SETUPTOOLS_VERSION=${BASE_SETUPTOOLS_VERSION:-79.0.1}
BASE_WHEEL_VERSION=${BASE_WHEEL_VERSION:-0.45.1}
BASE_FORCE=${BASE_FORCE:-0}
BASE_APT_SOURCES=${BASE_APT_SOURCES:-}
# 2025-01-01T00:00:00Z: file mtimes in the rootfs and the image's created time.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
START=$(date +%s)
log() { printf '[image-base +%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

present() { buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; }

for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || {
    log "missing $tool: apt-get install -y --no-install-recommends mmdebstrap buildah (scripts/bootstrap.sh)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "needs root (mmdebstrap --mode=root, root containers-storage)"; exit 1; }
if [ "$BASE_FORCE" = 0 ] && present; then log "cached: $BASE_IMAGE"; exit 0; fi

mkdir -p "$DIR/debs" "$DIR/wheels"
# A second concurrent run (build-operator.sh from another shell) waits, then finds the image.
exec {lockfd}>"$CACHE/.lock-image-base"
flock -n "$lockfd" || { log "another build holds $CACHE/.lock-image-base; waiting for it"; flock "$lockfd"; }
if [ "$BASE_FORCE" = 0 ] && present; then log "cached: $BASE_IMAGE"; exit 0; fi

if [ -z "$BASE_APT_SOURCES" ]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -s "$f" ] && { BASE_APT_SOURCES=$f; break; }
  done
  [ -n "$BASE_APT_SOURCES" ] || { log "no Debian apt sources found on the host; set BASE_APT_SOURCES=<file>"; exit 1; }
fi

tmp=$(mktemp -d "$DIR/.build.XXXXXX")
ctr=""
cleanup() {
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# 1. pip/setuptools/wheel wheels, with pip's ordinary client and the host's pip configuration.
need=0
for w in "pip-$BASE_PIP_VERSION-" "setuptools-$BASE_SETUPTOOLS_VERSION-" "wheel-$BASE_WHEEL_VERSION-"; do
  compgen -G "$DIR/wheels/${w}*.whl" >/dev/null || need=1
done
if [ "$need" = 1 ]; then
  log "downloading pip $BASE_PIP_VERSION, setuptools $BASE_SETUPTOOLS_VERSION, wheel $BASE_WHEEL_VERSION"
  python3 -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.11 -d "$DIR/wheels" \
    "pip==$BASE_PIP_VERSION" "setuptools==$BASE_SETUPTOOLS_VERSION" "wheel==$BASE_WHEEL_VERSION"
fi
pip_whl=$(basename "$(compgen -G "$DIR/wheels/pip-$BASE_PIP_VERSION-*.whl" | head -n1)")

# 2. The rootfs: minbase + python3, merged-/usr, no docs/man pages/locales, the PEP 668 marker diverted
#    away (so an apt upgrade of python3.11 cannot bring it back), pip & co. installed from the wheels.
rootfs="$tmp/rootfs.tar"
log "mmdebstrap bookworm (apt sources: $BASE_APT_SOURCES; .deb cache: $DIR/debs)"
mmdebstrap \
  --variant=minbase --mode=root \
  --include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata \
  --aptopt='APT::Install-Recommends "false"' --aptopt='APT::Install-Suggests "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --skip=output/dev --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives/"' \
  --setup-hook="sync-in '$DIR/debs' /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives '$DIR/debs'" \
  --customize-hook='mkdir -p "$1/tmp/wheels"' \
  --customize-hook="sync-in '$DIR/wheels' /tmp/wheels" \
  --customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/lib/python3.11/EXTERNALLY-MANAGED' \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    python3 /tmp/wheels/$pip_whl/pip install --no-index --find-links /tmp/wheels --no-cache-dir --no-compile \
    --disable-pip-version-check --root-user-action=ignore \
    pip==$BASE_PIP_VERSION setuptools==$BASE_SETUPTOOLS_VERSION wheel==$BASE_WHEEL_VERSION" \
  --customize-hook='rm -rf "$1/tmp/wheels" "$1/root/.cache"; find "$1/usr/local" -depth -name __pycache__ -type d -exec rm -rf {} +' \
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
  --customize-hook='rm -f "$1/var/log/dpkg.log" "$1/var/log/alternatives.log" "$1/var/log/apt/"*.log "$1/var/cache/debconf/"*-old "$1/var/lib/dpkg/"*-old' \
  bookworm "$rootfs" "$BASE_APT_SOURCES" >&2
rm -rf "$DIR/debs/lock" "$DIR/debs/partial"
log "rootfs: $(du -h "$rootfs" | cut -f1)"

# 3. Commit it as a one-layer image with the official image's config.
python_version=$(tar -xOf "$rootfs" ./var/lib/dpkg/status |
  awk '/^Package: python3.11-minimal$/{p=1} p&&/^Version:/{print $2; exit}')
ctr=$(buildah from --pull=never scratch)
buildah add --quiet "$ctr" "$rootfs" / >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --env PYTHON_VERSION="$python_version" \
  --env PYTHON_PIP_VERSION="$BASE_PIP_VERSION" \
  --cmd '["python3"]' \
  --os linux --arch "$(dpkg --print-architecture)" \
  --label org.opencontainers.image.description="test-bed stand-in for python:3.11-slim-bookworm (Debian bookworm python3 + pip/setuptools/wheel)" \
  "$ctr"
old_id=$(buildah images --quiet --no-trunc "$BASE_IMAGE" 2>/dev/null || true)
buildah commit --quiet --rm --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$BASE_IMAGE" >/dev/null
ctr=""
new_id=$(buildah images --quiet --no-trunc "$BASE_IMAGE")
# A different previous build of this name is now untagged: drop it (harmless failure if something uses it).
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then buildah rmi "$old_id" >/dev/null 2>&1 || true; fi
log "built $BASE_IMAGE (${new_id#sha256:}) with python $python_version"
