#!/usr/bin/env bash
# Builds the test environment's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, MinIO, helm, Prometheus and promtool, metrics-server; for the real
# node: kubelet, the CNI plugins and two tiny images, a pause image and a test program) from Go modules into a
# cache outside the repository, one directory per tool and version, so a machine that has them
# skips the build.
# As root it also installs containerd and runc with apt-get when they are missing.
#
#   hack/install-testenv.sh            build what is missing, print the bin directories
#   hack/install-testenv.sh --print    print the bin directories only (no build)
#
# The cache root is $CONVEYOR_TESTENV_CACHE (default: $XDG_CACHE_HOME/conveyor-testenv).
#
# Build times seen on 2 busy cores (go1.26.8, Go modules already downloaded): with the Go build
# cache holding the control plane's packages (built first, by this script) kubelet 30 s, CNI
# plugins 8 s, node images 1 s; with an empty Go build cache kubelet 265 s, then CNI plugins 5 s.
# Prometheus with promtool, after the rest and with its modules not yet downloaded: 253 s.
# metrics-server, after the rest and with its modules not yet downloaded: 191 s (3 s from a warm cache).
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
kubelet_dir=$cache/kubelet-$K8S_VERSION-$go_version
cni_dir=$cache/cni-plugins-$CNI_PLUGINS_VERSION-$go_version
prometheus_dir=$cache/prometheus-$PROMETHEUS_VERSION-$go_version
metrics_server_dir=$cache/metrics-server-$METRICS_SERVER_VERSION-$go_version
# The custom-metrics adapter (a stand-in for prometheus-adapter, which the module proxy refuses) is our
# own small program under tests/testenv/metricsadapter: its cache key is a digest of its sources.
adapter_src=$here/../tests/testenv/metricsadapter
adapter_key=$(cat "$adapter_src/go.mod" "$adapter_src/go.sum" "$adapter_src/main.go" | sha256sum | cut -c1-12)
metrics_adapter_dir=$cache/metrics-adapter-$adapter_key-$go_version

# The node images' sources live in this script; their cache key is a digest of those sources.
IFS= read -r -d '' PAUSE_GO <<'EOF' || true
// pause is a pod sandbox's first process: it holds the pod's namespaces, reaps the children
// reparented to it and exits 0 on SIGINT or SIGTERM, as the upstream pause image does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF

IFS= read -r -d '' NODETEST_GO <<'EOF' || true
// nodetest is the program of the node tests' image: its arguments are steps separated by ";",
//
//	print WORDS...   a line on stdout          eprint WORDS...  a line on stderr
//	write PATH TEXT  write a file              cat PATH         print a file
//	alloc MIB        allocate and touch MiB    get URL [CA]     HTTP GET (trusting the PEM file CA), print status and body
//	id               print uid and gid         sleep SECONDS|forever
//	serve PORT TEXT  answer every HTTP request with TEXT, forever
//	exit CODE
//
// A failing step prints why on stderr and exits 1. SIGTERM ends it with 0 (it runs as PID 1).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var held [][]byte

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nodetest: "+format+"\n", args...)
	os.Exit(1)
}

func run(step []string) {
	if len(step) == 0 {
		return
	}
	args := step[1:]
	need := func(n int) {
		if len(args) < n {
			fail("%s needs %d argument(s)", step[0], n)
		}
	}
	switch step[0] {
	case "print":
		fmt.Println(strings.Join(args, " "))
	case "eprint":
		fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	case "write":
		need(2)
		if err := os.WriteFile(args[0], []byte(strings.Join(args[1:], " ")), 0o644); err != nil {
			fail("write: %v", err)
		}
	case "cat":
		need(1)
		data, err := os.ReadFile(args[0])
		if err != nil {
			fail("cat: %v", err)
		}
		os.Stdout.Write(data)
	case "alloc":
		need(1)
		mib, err := strconv.Atoi(args[0])
		if err != nil {
			fail("alloc: %v", err)
		}
		for i := 0; i < mib; i++ {
			chunk := make([]byte, 1<<20)
			for j := 0; j < len(chunk); j += 4096 {
				chunk[j] = 1
			}
			held = append(held, chunk)
		}
		fmt.Printf("allocated %d MiB\n", mib)
	case "get":
		need(1)
		client := http.Client{Timeout: 10 * time.Second}
		if len(args) > 1 {
			pem, err := os.ReadFile(args[1])
			if err != nil {
				fail("get: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				fail("get: no certificate in %s", args[1])
			}
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		}
		resp, err := client.Get(args[0])
		if err != nil {
			fail("get: %v", err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		fmt.Printf("status %d\n%s\n", resp.StatusCode, body)
	case "serve":
		need(2)
		text := strings.Join(args[1:], " ")
		err := http.ListenAndServe(":"+args[0], http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, text)
		}))
		fail("serve: %v", err)
	case "id":
		fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	case "sleep":
		need(1)
		if args[0] == "forever" {
			select {}
		}
		seconds, err := strconv.ParseFloat(args[0], 64)
		if err != nil {
			fail("sleep: %v", err)
		}
		time.Sleep(time.Duration(seconds * float64(time.Second)))
	case "exit":
		need(1)
		code, err := strconv.Atoi(args[0])
		if err != nil {
			fail("exit: %v", err)
		}
		os.Exit(code)
	default:
		fail("unknown step %q", step[0])
	}
}

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		os.Exit(0)
	}()
	var step []string
	for _, arg := range os.Args[1:] {
		if arg == ";" {
			run(step)
			step = nil
			continue
		}
		step = append(step, arg)
	}
	run(step)
}
EOF

# Packs files into an image archive in `docker save` form (manifest.json, config, one layer tar),
# which `ctr images import` reads; byte-for-byte reproducible (fixed times and owners).
IFS= read -r -d '' PACK_IMAGE_PY <<'EOF' || true
import hashlib, io, json, sys, tarfile

out, ref, arch, entrypoint, user = sys.argv[1:6]
files = [arg.split("=", 1) for arg in sys.argv[6:]]  # PATH-IN-IMAGE=FILE


def add(tar, name, data=None, mode=0o755, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
    if data is None:
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


layer_buf = io.BytesIO()
with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
    for name, mode in (("dev", 0o755), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555), ("tmp", 0o1777)):
        add(layer, name, mode=mode, kind=tarfile.DIRTYPE)
    add(layer, "etc/passwd", b"root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/tmp:/nonexistent\n", 0o644)
    add(layer, "etc/group", b"root:x:0:\nnonroot:x:65532:\n", 0o644)
    for path, source in files:
        with open(source, "rb") as fh:
            add(layer, path.lstrip("/"), fh.read(), 0o755)
layer_bytes = layer_buf.getvalue()
layer_id = hashlib.sha256(layer_bytes).hexdigest()
epoch = "1970-01-01T00:00:00Z"
config = {
    "architecture": arch,
    "os": "linux",
    "created": epoch,
    "config": {"Entrypoint": [entrypoint], "User": user, "WorkingDir": "/", "Env": ["PATH=/"]},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
    "history": [{"created": epoch, "created_by": "hack/install-testenv.sh"}],
}
config_bytes = json.dumps(config, sort_keys=True).encode()
config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_id}/layer.tar"]}]
with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as archive:
    add(archive, layer_id, mode=0o755, kind=tarfile.DIRTYPE)
    add(archive, f"{layer_id}/layer.tar", layer_bytes, 0o644)
    add(archive, config_name, config_bytes, 0o644)
    add(archive, "manifest.json", json.dumps(manifest).encode(), 0o644)
EOF

images_key=$(printf '%s\n' "$PAUSE_GO" "$NODETEST_GO" "$PACK_IMAGE_PY" | sha256sum | cut -c1-12)
images_dir=$cache/node-images-$images_key-$go_version

if [[ ${1:-} == --print ]]; then
    printf '%s\n' "$k8s_dir" "$etcd_dir" "$kwok_dir" "$minio_dir" "$helm_dir" "$kubelet_dir" "$cni_dir" "$images_dir" \
        "$prometheus_dir" "$metrics_server_dir" "$metrics_adapter_dir"
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

# k8s_module OUT NAME PACKAGE...: a scratch module requiring k8s.io/kubernetes at K8S_VERSION, with
# every staging module the release replaces by ./staging/src/... replaced by its published
# v0.<minor>, and a tools.go importing PACKAGE...; prints the module's directory.
k8s_module() {
    local out=$1 name=$2 mod minor k8s_gomod replaces gd m pkg
    shift 2
    mod=$(scratch_module "$out" "$name")
    minor=${K8S_VERSION#v1.}
    k8s_gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    replaces=$(sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[A-Za-z0-9_.-]+)[[:space:]]+=>[[:space:]]+\./staging/src/k8s\.io/.*#\2#p' "$k8s_gomod")
    [[ -n $replaces ]] || { echo "no staging replaces found in $k8s_gomod" >&2; return 1; }
    (
        cd "$mod"
        # Upstream's go and godebug lines, so runtime defaults match the release build.
        go mod edit -go="$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$k8s_gomod")"
        gd=$(sed -nE 's/^godebug (.*)$/\1/p' "$k8s_gomod")
        [[ -z $gd ]] || go mod edit -godebug="$gd"
        for m in $replaces; do go mod edit -replace="$m=$m@v0.$minor"; done
        go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
        {
            printf '//go:build tools\n\npackage tools\n\nimport (\n'
            for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg"; done
            printf ')\n'
        } >tools.go
    )
    echo "$mod"
}

# k8s_ldflags MODULE-DIR: the -X flags that stamp K8S_VERSION into a build, as the release does.
k8s_ldflags() {
    local mod=$1 minor=${K8S_VERSION#v1.} date commit ld="" pkg key
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    commit=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin",{}).get("Hash","unknown"))')
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        for key in "gitVersion=$K8S_VERSION" "gitMajor=1" "gitMinor=${minor%%.*}" \
            "gitCommit=$commit" "gitTreeState=clean" "buildDate=$date"; do
            ld="$ld -X '$pkg.$key'"
        done
    done
    echo "$ld"
}

# k8s_build OUT NAME PACKAGE...: builds the Kubernetes commands PACKAGE... into OUT/bin. The flags are
# the same for every Kubernetes build so the Go build cache serves what they share.
k8s_build() {
    local out=$1 name=$2 mod ld
    shift 2
    mod=$(k8s_module "$out" "$name" "$@")
    ld=$(k8s_ldflags "$mod")
    mkdir -p "$out/bin"
    (cd "$mod" && go build -tags tools,selinux,notest,grpcnotrace -trimpath -ldflags "-s -w $ld" -o "$out/bin/" "$@")
}

build_kubernetes() {
    local out=$1
    k8s_build "$out" kubernetes k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    "$out/bin/kube-apiserver" --version
}

# The kubelet in a directory of its own, so adding it never rebuilds the cached control plane.
build_kubelet() {
    local out=$1
    k8s_build "$out" kubelet k8s.io/kubernetes/cmd/kubelet
    "$out/bin/kubelet" --version
}

build_cni_plugins() {
    local out=$1 mod base=github.com/containernetworking/plugins
    mod=$(scratch_module "$out" cni-plugins)
    (
        cd "$mod"
        go mod edit -require="$base@$CNI_PLUGINS_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s"\n\t_ "%s"\n\t_ "%s"\n\t_ "%s"\n)\n' \
            "$base/plugins/main/bridge" "$base/plugins/main/loopback" "$base/plugins/ipam/host-local" \
            "$base/plugins/meta/portmap" >tools.go
        mkdir -p "$out/bin"
        go build -tags tools -trimpath -ldflags "-s -w -X $base/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
            -o "$out/bin/" "$base/plugins/main/bridge" "$base/plugins/main/loopback" "$base/plugins/ipam/host-local" \
            "$base/plugins/meta/portmap"
    )
    "$out/bin/bridge" 2>&1 | head -1
}

# The pause image (containerd's sandbox image; nothing can be pulled) and the node tests' image,
# each a static Go program in an image archive written without Docker. References are
# conveyor.dev/testenv/NAME:KEY, recorded in OUT/NAME.ref next to OUT/NAME.tar.
build_node_images() {
    local out=$1 mod arch name
    mod=$(scratch_module "$out" node-images)
    arch=$(go env GOARCH)
    mkdir -p "$mod/pause" "$mod/nodetest" "$out/bin"
    printf '%s\n' "$PAUSE_GO" >"$mod/pause/main.go"
    printf '%s\n' "$NODETEST_GO" >"$mod/nodetest/main.go"
    printf '%s\n' "$PACK_IMAGE_PY" >"$mod/pack_image.py"
    (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$out/bin/" ./pause ./nodetest)
    python3 "$mod/pack_image.py" "$out/pause.tar" "conveyor.dev/testenv/pause:$images_key" "$arch" /pause 65535:65535 \
        "/pause=$out/bin/pause"
    python3 "$mod/pack_image.py" "$out/nodetest.tar" "conveyor.dev/testenv/nodetest:$images_key" "$arch" /nodetest "" \
        "/nodetest=$out/bin/nodetest"
    for name in pause nodetest; do echo "conveyor.dev/testenv/$name:$images_key" >"$out/$name.ref"; done
    ls -l "$out"/*.tar
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

# Prometheus and promtool, API only: without the builtinassets tag the web UI is read from disk and
# never generated (the tests use only the HTTP API). remove_all_sd,enable_kubernetes_sd leave out the
# cloud service discoveries and their SDKs; file, HTTP, static and Kubernetes discovery remain.
build_prometheus() {
    local out=$1 mod base=github.com/prometheus/prometheus version revision ld v
    mod=$(scratch_module "$out" prometheus)
    (
        cd "$mod"
        go mod edit -require="$base@$PROMETHEUS_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s"\n\t_ "%s"\n)\n' \
            "$base/cmd/prometheus" "$base/cmd/promtool" >tools.go
        # The release's version from its VERSION file (module v0.316.0 is Prometheus 3.16.0), and its
        # commit when the module's origin is known.
        read -r version revision < <(go mod download -json "$base@$PROMETHEUS_VERSION" | python3 -c '
import json, sys
info = json.load(sys.stdin)
print(open(info["Dir"] + "/VERSION").read().strip(), info.get("Origin", {}).get("Hash", "unknown"))')
        ld="-s -w" v=github.com/prometheus/common/version
        ld="$ld -X $v.Version=$version -X $v.Revision=$revision -X $v.Branch=HEAD"
        ld="$ld -X $v.BuildUser=conveyor-testenv -X $v.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
        mkdir -p "$out/bin"
        go build -tags tools,netgo,remove_all_sd,enable_kubernetes_sd -trimpath -ldflags "$ld" \
            -o "$out/bin/" "$base/cmd/prometheus" "$base/cmd/promtool"
    )
    "$out/bin/prometheus" --version 2>&1 | head -1
}

# metrics-server, the resource metrics API (metrics.k8s.io) the HPA reads CPU from; its version
# stamped into client-go's version package, as its Makefile does.
build_metrics_server() {
    local out=$1 mod base=sigs.k8s.io/metrics-server revision ld v
    mod=$(scratch_module "$out" metrics-server)
    (
        cd "$mod"
        go mod edit -require="$base@$METRICS_SERVER_VERSION"
        printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$base/cmd/metrics-server" >tools.go
        revision=$(go mod download -json "$base@$METRICS_SERVER_VERSION" |
            python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin",{}).get("Hash","unknown"))')
        v=k8s.io/client-go/pkg/version
        ld="-s -w -X $v.gitVersion=$METRICS_SERVER_VERSION -X $v.gitCommit=$revision"
        ld="$ld -X $v.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        mkdir -p "$out/bin"
        go build -tags tools -trimpath -ldflags "$ld" -o "$out/bin/" "$base/cmd/metrics-server"
    )
    "$out/bin/metrics-server" --version 2>&1 | head -1
}

# The custom-metrics adapter (custom.metrics.k8s.io from Prometheus queries; see its main.go), built from a
# copy of its sources so the build never touches the checkout.
build_metrics_adapter() {
    local out=$1
    mkdir -p "$out/src" "$out/bin"
    cp "$adapter_src/go.mod" "$adapter_src/go.sum" "$adapter_src/main.go" "$out/src/"
    (cd "$out/src" && go build -trimpath -ldflags "-s -w" -o "$out/bin/metrics-adapter" .)
    "$out/bin/metrics-adapter" --help >/dev/null 2>&1 || true
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
        apt_install "${missing[@]}"
    else
        echo "install-testenv: missing system packages: ${missing[*]} (install them as root)" >&2
        return 1
    fi
}

# The real node's runtime: containerd (with ctr and its runc shim) and runc, from the distribution.
# Only the kubelet node tests need them, so without root this warns instead of failing.
ensure_node_packages() {
    step="node packages"
    local missing=()
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || missing+=(runc)
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt_install "${missing[@]}"
    else
        echo "install-testenv: the kubelet node tests need ${missing[*]} (install them as root)" >&2
    fi
}

apt_install() {
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_system_packages
ensure_node_packages
mkdir -p "$cache"
say "cache: $cache (go $go_version)"
build_once "$k8s_dir" "kubernetes $K8S_VERSION" build_kubernetes
build_once "$etcd_dir" "etcd $ETCD_VERSION" build_etcd
build_once "$kwok_dir" "kwok $KWOK_VERSION" build_kwok
build_once "$helm_dir" "helm $HELM_VERSION" build_helm
build_once "$minio_dir" "minio $MINIO_VERSION" build_minio
build_once "$kubelet_dir" "kubelet $K8S_VERSION" build_kubelet
build_once "$cni_dir" "CNI plugins $CNI_PLUGINS_VERSION" build_cni_plugins
build_once "$images_dir" "node images $images_key" build_node_images
build_once "$prometheus_dir" "prometheus $PROMETHEUS_VERSION" build_prometheus
build_once "$metrics_server_dir" "metrics-server $METRICS_SERVER_VERSION" build_metrics_server
build_once "$metrics_adapter_dir" "metrics adapter $adapter_key" build_metrics_adapter
# The scratch modules are only needed while building.
all_dirs=("$k8s_dir" "$etcd_dir" "$kwok_dir" "$minio_dir" "$helm_dir" "$kubelet_dir" "$cni_dir" "$images_dir"
    "$prometheus_dir" "$metrics_server_dir" "$metrics_adapter_dir")
for d in "${all_dirs[@]}"; do rm -rf "$d/src"; done
step=done
say "all binaries present"
printf '%s\n' "${all_dirs[@]}"
