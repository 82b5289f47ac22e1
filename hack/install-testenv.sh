#!/usr/bin/env bash
# Builds the test environment's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, MinIO, helm) from Go modules into a cache outside the
# repository, one directory per tool and version, so a machine that has them skips the build.
#
#   hack/install-testenv.sh            build what is missing, print the bin directories
#   hack/install-testenv.sh --print    print the bin directories only (no build)
#
# The cache root is $CONVEYOR_TESTENV_CACHE (default: $XDG_CACHE_HOME/conveyor-testenv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/testenv.env
source "$here/testenv.env"

cache=${CONVEYOR_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/conveyor-testenv}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
go_version=$(go env GOVERSION)

k8s_dir=$cache/kubernetes-$K8S_VERSION-$go_version
etcd_dir=$cache/etcd-$ETCD_VERSION-$go_version
kwok_dir=$cache/kwok-$KWOK_VERSION-$go_version
minio_dir=$cache/minio-$MINIO_VERSION-$go_version
helm_dir=$cache/helm-$HELM_VERSION-$go_version

if [[ ${1:-} == --print ]]; then
    printf '%s\n' "$k8s_dir" "$etcd_dir" "$kwok_dir" "$minio_dir" "$helm_dir"
    exit 0
fi

step=""
trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo "install-testenv: FAILED at step: $step (exit $rc)" >&2; fi' EXIT

say() { printf '[install-testenv %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# build_once DIR STEP-NAME FUNCTION: runs FUNCTION into DIR.tmp and renames it to DIR on success,
# so an interrupted build never leaves a half-filled directory that looks complete.
build_once() {
    local dir=$1 name=$2 fn=$3
    step=$name
    if [[ -f $dir/.complete ]]; then
        say "$name: cached in $dir"
        return
    fi
    say "$name: building into $dir"
    local start=$SECONDS
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    "$fn" "$dir.tmp"
    date -u +%FT%TZ >"$dir.tmp/.complete"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    say "$name: built in $((SECONDS - start)) s"
}

# A scratch Go module per tool, so minimum version selection never couples their dependencies.
scratch_module() {
    local mod=$1/src
    mkdir -p "$mod"
    (cd "$mod" && go mod init "conveyor.dev/testenv/$2" >/dev/null 2>&1)
    echo "$mod"
}

build_kubernetes() {
    local out=$1 mod minor k8s_gomod
    mod=$(scratch_module "$out" kubernetes)
    minor=${K8S_VERSION#v1.}
    k8s_gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # Every staging module the release replaces with ./staging/src/... is published as v0.<minor>.
    local replaces
    replaces=$(sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[A-Za-z0-9_.-]+)[[:space:]]+=>[[:space:]]+\./staging/src/k8s\.io/.*#\2#p' "$k8s_gomod")
    [[ -n $replaces ]] || { echo "no staging replaces found in $k8s_gomod" >&2; return 1; }
    (
        cd "$mod"
        # Upstream's go and godebug lines, so runtime defaults match the release build.
        go mod edit -go="$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$k8s_gomod")"
        local gd
        gd=$(sed -nE 's/^godebug (.*)$/\1/p' "$k8s_gomod")
        [[ -z $gd ]] || go mod edit -godebug="$gd"
        for m in $replaces; do go mod edit -replace="$m=$m@v0.$minor"; done
        go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
        cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
        local major=1 minor_num=${minor%%.*} date commit ld="" key
        date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
        commit=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
            python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin",{}).get("Hash","unknown"))')
        for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
            for key in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor_num" \
                "gitCommit=$commit" "gitTreeState=clean" "buildDate=$date"; do
                ld="$ld -X '$pkg.$key'"
            done
        done
        mkdir -p "$out/bin"
        go build -tags tools,selinux,notest,grpcnotrace -trimpath -ldflags "-s -w $ld" -o "$out/bin/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    )
    "$out/bin/kube-apiserver" --version
}

build_etcd() {
    local out=$1 mod
    mod=$(scratch_module "$out" etcd)
    (
        cd "$mod"
        go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -require="go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n)\n' >tools.go
        mkdir -p "$out/bin"
        go build -tags tools -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
        go build -tags tools -trimpath -ldflags "-s -w" -o "$out/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
    )
    "$out/bin/etcd" --version
}

build_kwok() {
    local out=$1 mod
    mod=$(scratch_module "$out" kwok)
    (
        cd "$mod"
        go mod edit -require="sigs.k8s.io/kwok@$KWOK_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kwok/cmd/kwok"\n' >tools.go
        mkdir -p "$out/bin"
        go build -tags tools -trimpath -ldflags "-s -w" -o "$out/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
        # kwok has no built-in stages; the fast ones ship inside the module zip.
        local src
        src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
        mkdir -p "$out/stages"
        cp -r "$src/kustomize/stage/." "$out/stages/"
        chmod -R u+w "$out/stages"
        find "$out/stages" -name '*.go' -delete
    )
    "$out/bin/kwok" --version || true
}

build_minio() {
    local out=$1 mod
    mod=$(scratch_module "$out" minio)
    (
        cd "$mod"
        go mod edit -require="github.com/minio/minio@$MINIO_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/minio/minio"\n' >tools.go
        mkdir -p "$out/bin"
        go build -tags tools,kqueue -trimpath -ldflags "-s -w" -o "$out/bin/minio" github.com/minio/minio
    )
    "$out/bin/minio" --version
}

build_helm() {
    local out=$1 mod
    mod=$(scratch_module "$out" helm)
    (
        cd "$mod"
        go mod edit -require="helm.sh/helm/v3@$HELM_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' >tools.go
        # Stamp the Kubernetes version helm assumes when no cluster is asked (lint, template).
        local kmin=${K8S_VERSION#v1.}
        kmin=${kmin%%.*}
        local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
        for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
            ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kmin"
        done
        mkdir -p "$out/bin"
        go build -tags tools -trimpath -ldflags "$ld" -o "$out/bin/helm" helm.sh/helm/v3/cmd/helm
    )
    "$out/bin/helm" version --short
}

# System tools the test harness runs: openssl (test CA), iproute2 (pod network namespaces).
# Installed only when missing, and only where apt-get can run (root on Debian/Ubuntu).
ensure_system_packages() {
    step="system packages"
    local missing=()
    command -v openssl >/dev/null || missing+=(openssl)
    command -v ip >/dev/null || missing+=(iproute2)
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "install-testenv: missing system packages: ${missing[*]} (install them as root)" >&2
        return 1
    fi
}

ensure_system_packages
mkdir -p "$cache"
say "cache: $cache (go $go_version)"
build_once "$k8s_dir" "kubernetes $K8S_VERSION" build_kubernetes
build_once "$etcd_dir" "etcd $ETCD_VERSION" build_etcd
build_once "$kwok_dir" "kwok $KWOK_VERSION" build_kwok
build_once "$helm_dir" "helm $HELM_VERSION" build_helm
build_once "$minio_dir" "minio $MINIO_VERSION" build_minio
# The scratch modules are only needed while building.
for d in "$k8s_dir" "$etcd_dir" "$kwok_dir" "$minio_dir" "$helm_dir"; do rm -rf "$d/src"; done
step=done
say "all binaries present"
printf '%s\n' "$k8s_dir" "$etcd_dir" "$kwok_dir" "$minio_dir" "$helm_dir"
