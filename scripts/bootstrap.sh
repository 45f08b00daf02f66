#!/usr/bin/env bash
# Install everything the project needs on a fresh machine, from the project's own files:
# the Python venv (pyproject), PostgreSQL for the contract tests (Debian), and the test-bed binaries
# (built from the Go module proxy and cached outside the repo). Idempotent; prints what it reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
say() { printf '[bootstrap +%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then say "creating .venv"; "$PY" -m venv .venv; fi
if ! .venv/bin/python -c 'import dittoctl, kopf, kubernetes_asyncio, pytest, hypothesis' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  say "installing the project and its test extra into .venv (versions from constraints.txt)"
  .venv/bin/python -m pip install -q -c constraints.txt pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
  touch .venv/.installed
else
  say "cached: .venv"
fi

if [ "${SKIP_POSTGRES:-0}" != 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "installing PostgreSQL (Debian) for the contract tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  # Debian starts a cluster on 5432; the tests run their own on free ports, so stop it.
  $SUDO service postgresql stop >/dev/null 2>&1 || true
else
  say "cached: PostgreSQL"
fi

# The identity-provider contract tests (tests/contract/test_identity_providers.py): a real OpenLDAP slapd
# and MIT ktutil to write a keytab. Debian may start its own slapd: stopped, the tests run theirs.
if [ "${SKIP_IDENTITY:-0}" != 1 ] && { [ ! -x /usr/sbin/slapd ] || [ ! -x /usr/bin/ktutil ]; }; then
  say "installing slapd and krb5-user (Debian) for the identity contract tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends slapd krb5-user >/dev/null
  $SUDO service slapd stop >/dev/null 2>&1 || true
else
  say "cached: slapd, ktutil"
fi

# The test bed's real node (SPEC §14, tests/testbed/node.py): container runtime, CNI plugins, the offline
# image builder and its inputs (busybox for the images' shell, gcc for the pause binary), and the
# userspace NFS and SMB clients the tests write and read files with. It needs root; without it the real-node tests fail
# loudly unless DITTOFS_TESTBED_REAL_NODE=0.
# The operator's own image (tests/testbed/image/, `build.sh operator-image`): mmdebstrap for the base image,
# buildah to build the Dockerfile, skopeo to export it. Without recommends these add only their libraries,
# uidmap and the containers config (no podman, no netavark: containers-common's network stack dependency
# is met by containernetworking-plugins), and nothing runs until a build does. socat relays the
# loopback apiserver to the node's bridge address for in-cluster clients (node.py).
NODE_PKGS="containerd runc containernetworking-plugins iptables busybox-static umoci libnfs-utils smbclient gcc libc6-dev mmdebstrap buildah skopeo socat"
NODE_BINS="/usr/bin/containerd /usr/sbin/runc /usr/lib/cni/bridge /usr/sbin/iptables /usr/bin/busybox /usr/bin/umoci
/usr/bin/nfs-cp /usr/bin/smbclient /usr/bin/gcc /usr/bin/mmdebstrap /usr/bin/buildah /usr/bin/skopeo /usr/bin/socat"
node_missing=""; for b in $NODE_BINS; do [ -x "$b" ] || node_missing="$node_missing $b"; done
if [ "${SKIP_REAL_NODE:-0}" = 1 ]; then
  say "skipping real-node packages (SKIP_REAL_NODE=1)"
elif [ -z "$node_missing" ]; then
  say "cached: real-node packages"
elif [ "$(id -u)" = 0 ]; then
  say "installing real-node packages (Debian):$node_missing missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $NODE_PKGS >/dev/null
  for b in $NODE_BINS; do [ -x "$b" ] || { say "ERROR: $b still missing after installing $NODE_PKGS"; exit 1; }; done
else
  say "WARNING: not root, cannot install the real-node packages ($NODE_PKGS); real-node tests will fail"
fi

say "test-bed binaries (first build: about 10-30 min on 2 cores)"
bash tests/testbed/build.sh all
say "done"
