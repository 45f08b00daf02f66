#!/usr/bin/env bash
# Build the operator image from the repository's unchanged Dockerfile with buildah, and export it as an OCI
# archive that `ctr -n k8s.io images import` names docker.io/library/dittofs-operator:<appVersion> (what the
# chart's `image: dittofs-operator:<appVersion>` resolves to on a node).
#
#   $CACHE/images/operator-<key>.oci.tar      <key>: sha256 over the Dockerfile, every file of the build
#                                              context (path, exec bit, contents), the image ref and
#                                              BUILDER_VERSION; only the newest archive is kept.
#
# The archive's path is the last line on stdout (everything else goes to stderr). If the archive for the
# current key exists, that is all this does (well under a second).
#
# How it builds:
#   - the build context holds only what the Dockerfile COPYs (parsed from it), plus the Dockerfile and
#     .dockerignore, from the working tree without __pycache__/*.pyc;
#   - `FROM python:3.11-slim-bookworm` must be in containers-storage: build-base.sh makes it when missing,
#     and --pull=never turns a missing base into an error instead of a pull;
#   - RUN steps use the host's network (--network host). Never buildah's private CNI network: it sets
#     net.ipv4.ip_forward=1 and adds CNI-* iptables chains, which the test bed's safety checks forbid;
#   - the builder stage's pip reaches the package index with the host's pip configuration, generated at run
#     time into a temporary pip.conf mounted at /etc/pip.conf, plus the CA bundle it names (this host's
#     egress proxy CA is only in the host's bundle). buildah leaves an empty /etc/pip.conf mount point in
#     the image; nothing else of the host gets in;
#   - --layers caches every step; chains of intermediate images from earlier builds (recorded in
#     $CACHE/images/.operator-layers) are removed, so storage does not grow with every code change.
#
# Needs root, buildah and skopeo (scripts/bootstrap.sh). Knobs: OPERATOR_IMAGE_SRC (the project tree, default
# this checkout), OPERATOR_IMAGE_NOCACHE=1 (rebuild every step).
set -euo pipefail

# Bump when this script changes what ends up in the archive: every cached archive is then rebuilt.
BUILDER_VERSION=1
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${OPERATOR_IMAGE_SRC:-$(cd "$HERE/../../.." && pwd)}
CACHE=${DITTOFS_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-operator/testbed}
OUT="$CACHE/images"
BASE=docker.io/library/python:3.11-slim-bookworm
START=$(date +%s)
log() { printf '[operator-image +%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
exec 3>&1 1>&2  # stdout is for the archive path only

version=$(sed -n 's/^appVersion:[[:space:]]*["'\'']\{0,1\}\([^"'\'' #]*\).*/\1/p' "$SRC/config/chart/Chart.yaml")
[ -n "$version" ] || { log "no appVersion in $SRC/config/chart/Chart.yaml"; exit 1; }
IMAGE="docker.io/library/dittofs-operator:$version"

# `context key ROOT` prints the key, `context copy ROOT DEST` copies the build context: the Dockerfile,
# .dockerignore and every COPY source (not --from) of the Dockerfile, without __pycache__ and *.pyc (as
# .dockerignore says).
context() {
  python3 - "$BUILDER_VERSION" "$IMAGE" "$@" <<'PY'
import hashlib, os, shlex, shutil, sys
builder, image, mode, root = sys.argv[1:5]

def copy_sources(dockerfile):
    text = open(dockerfile, encoding="utf-8").read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for src in (w for w in words[1:-1] if not w.startswith("--")):
            if any(c in src for c in "*?["):
                sys.exit(f"build-operator.sh: COPY source with a wildcard is not supported: {src}")
            out.append(os.path.normpath(src))
    return out

def files(root):
    top = ["Dockerfile"] + [".dockerignore"] * os.path.exists(os.path.join(root, ".dockerignore"))
    found = set()
    for src in top + copy_sources(os.path.join(root, "Dockerfile")):
        path = os.path.join(root, src)
        if os.path.isfile(path):
            found.add(src)
        elif os.path.isdir(path):
            for d, dirs, names in os.walk(path):
                dirs[:] = sorted(x for x in dirs if x != "__pycache__")
                found.update(os.path.relpath(os.path.join(d, n), root) for n in names if not n.endswith(".pyc"))
        else:
            sys.exit(f"build-operator.sh: COPY source {src} is missing in {root}")
    return sorted(found)

if mode == "key":
    h = hashlib.sha256(f"{builder}\0{image}\0".encode())
    for rel in files(root):
        path = os.path.join(root, rel)
        if os.path.islink(path):
            h.update(f"{rel}\0link\0{os.readlink(path)}\0".encode())
            continue
        with open(path, "rb") as f:
            data = f.read()
        h.update(f"{rel}\0{os.stat(path).st_mode & 0o111:o}\0{len(data)}\0".encode())
        h.update(data)
    print(h.hexdigest()[:16])
elif mode == "copy":
    dest = sys.argv[5]
    for rel in files(root):
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), os.path.join(dest, rel), follow_symlinks=False)
PY
}

key=$(context key "$SRC")
archive="$OUT/operator-$key.oci.tar"
if [ -s "$archive" ]; then echo "$archive" >&3; exit 0; fi

mkdir -p "$OUT"
exec {lockfd}>"$CACHE/.lock-operator-image"
flock -n "$lockfd" || { log "another build holds $CACHE/.lock-operator-image; waiting for it"; flock "$lockfd"; }
if [ -s "$archive" ]; then log "built meanwhile: $archive"; echo "$archive" >&3; exit 0; fi

for tool in buildah skopeo; do
  command -v "$tool" >/dev/null || {
    log "missing $tool: apt-get install -y --no-install-recommends buildah skopeo (scripts/bootstrap.sh)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "needs root (root containers-storage, as build-base.sh)"; exit 1; }
buildah inspect --type image "$BASE" >/dev/null 2>&1 || BASE_IMAGE="$BASE" bash "$HERE/build-base.sh"

tmp=$(mktemp -d "$OUT/.operator-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. The build context. The archive is named by the key of what was copied (if the tree changed meanwhile,
#    the next run sees a different key and rebuilds).
context copy "$SRC" "$tmp/ctx"
built_key=$(context key "$tmp/ctx")
[ "$built_key" = "$key" ] || log "the tree changed while it was copied: building key $built_key"
archive="$OUT/operator-$built_key.oci.tar"
log "context: $(find "$tmp/ctx" -type f | wc -l) files, key $built_key, image $IMAGE"

# 2. pip configuration for RUN steps, from the host's (`pip config list`: PIP_* variables > site > user >
#    global files), keeping only what reaching the index needs.
python3 -m pip config list 2>/dev/null | python3 -c '
import os, re, sys
rank = {":env:": 3, "site": 2, "user": 1}
keep = {"index-url", "extra-index-url", "trusted-host", "cert", "client-cert", "proxy", "timeout",
        "default-timeout", "retries"}
best = {}
for line in sys.stdin:
    m = re.match(r"^(.*)\.([^.=]+)=(.*)$", line.rstrip("\n"))
    if not m or m.group(2) not in keep:
        continue
    scope, key, val = m.groups()
    r = rank.get(scope, 0)
    if key not in best or r >= best[key][0]:
        best[key] = (r, val.strip("\x27\""))
# Without a cert setting, pip in the image would trust only certifi: point it at the host bundle (mounted).
if "cert" not in best and os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):
    best["cert"] = (0, "/etc/ssl/certs/ca-certificates.crt")
print("[global]")
for key, (_, val) in sorted(best.items()):
    print(f"{key} = {val}")
' >"$tmp/pip.conf"
chmod 0644 "$tmp/pip.conf"
mounts=(--volume "$tmp/pip.conf:/etc/pip.conf:ro")
while read -r f; do
  [ -f "$f" ] && mounts+=(--volume "$f:$f:ro")
done < <(awk -F' = ' '$1=="cert"||$1=="client-cert"{print $2}' "$tmp/pip.conf" | sort -u)
log "pip config passed in: $(awk -F' = ' 'NR>1{printf "%s ", $1}' "$tmp/pip.conf")"

# 3. Build. --force-rm: a failed RUN would otherwise leave its working container (pinning its images).
opts=(--pull=never --layers --force-rm --network host)
[ "${OPERATOR_IMAGE_NOCACHE:-0}" = 1 ] && opts+=(--no-cache)
old_id=$(buildah images --quiet --no-trunc "$IMAGE" 2>/dev/null || true)
log "buildah bud -> $IMAGE"
buildah bud "${opts[@]}" "${mounts[@]}" -f "$tmp/ctx/Dockerfile" -t "$IMAGE" "$tmp/ctx" 2>&1 | tee "$tmp/bud.log"
new_id=$(buildah images --quiet --no-trunc "$IMAGE")
new_id=${new_id#sha256:}
if [ -n "$old_id" ] && [ "${old_id#sha256:}" != "$new_id" ]; then buildah rmi "$old_id" >/dev/null 2>&1 || true; fi
log "built $IMAGE (${new_id:0:12})"

# Layer-cache hygiene: keep this build's chain (both stages), remove the chains earlier runs recorded
# (buildah prints 11-digit IDs: "--> 9a943fb3f95", "--> Using cache <64 digits>").
state="$OUT/.operator-layers"
{ grep -oE '^--> (Using cache )?[0-9a-f]{11,64}' "$tmp/bud.log" | awk '{print substr($NF, 1, 11)}'
  echo "${new_id:0:11}"; buildah images --quiet --no-trunc "$BASE" | sed 's/^sha256://' | cut -c1-11
} | sort -u >"$tmp/keep"
if [ -f "$state" ]; then
  for _ in 1 2 3 4 5; do  # a parent goes once its child is gone
    n=0
    for id in $(comm -23 <(sort -u "$state") "$tmp/keep"); do
      buildah images -a --quiet | cut -c1-11 | grep -qx "$id" || continue
      buildah rmi "$id" >/dev/null 2>&1 && n=$((n + 1))
    done
    [ "$n" = 0 ] && break
  done
fi
cp "$tmp/keep" "$state"

# 4. Export. The OCI index's org.opencontainers.image.ref.name is the full reference, which containerd's
#    importer keeps as the image name. Written aside, then renamed: a reader never sees half an archive.
skopeo copy --quiet "containers-storage:$IMAGE" "oci-archive:$tmp/image.oci.tar:$IMAGE"
mv "$tmp/image.oci.tar" "$archive"
find "$OUT" -maxdepth 1 -name 'operator-*.oci.tar' ! -name "$(basename "$archive")" -delete
log "exported $(du -h "$archive" | cut -f1) $archive"
echo "$archive" >&3
