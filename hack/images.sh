#!/usr/bin/env bash
# Builds Conveyor's three images (operator, step, server) from images/Dockerfile on a machine that
# may have no Docker engine yet and no registry to pull from. In order, and only where needed:
#   - installs Debian's docker.io with apt-get when no engine is installed;
#   - starts dockerd in the background when none answers (and leaves it running; an engine it did
#     not start is never stopped);
#   - uses PYTHON_IMAGE when it is present or can be pulled, and otherwise a stand-in built from
#     Debian's packages by images/base/build-base.sh (cached by a hash of its inputs);
#   - builds the three targets with BuildKit (cached: a run with nothing changed takes seconds).
#
#   hack/images.sh            build, then print the references (as --print does)
#   hack/images.sh --print    print the references only, one a line: operator, step, server
#   hack/images.sh --engine   only install and start the engine; print the client to use (DOCKER=...)
#
# Settings, from the environment (`make images` passes its variables of the same names):
#   IMAGE_REPO (ghcr.io/conveyor-dev), IMAGE_TAG (the version in pyproject.toml),
#   OPERATOR_IMAGE, STEP_IMAGE, SERVER_IMAGE (default: $IMAGE_REPO/conveyor-<name>:$IMAGE_TAG),
#   PYTHON_IMAGE (python:3.11.13-slim-bookworm), DOCKER_BUILD_FLAGS (extra `docker build` flags),
#   DOCKER (default /usr/bin/docker, Debian's client: it builds with BuildKit without a buildx plugin),
#   CONVEYOR_DOCKERD_LOG (/var/log/conveyor-dockerd.log),
#   CONVEYOR_IMAGES_LOGS (where each build's log is kept: $XDG_CACHE_HOME/conveyor-images).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/conveyor-dev}
IMAGE_TAG=${IMAGE_TAG:-$version}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-$IMAGE_REPO/conveyor-operator:$IMAGE_TAG}
STEP_IMAGE=${STEP_IMAGE:-$IMAGE_REPO/conveyor-step:$IMAGE_TAG}
SERVER_IMAGE=${SERVER_IMAGE:-$IMAGE_REPO/conveyor-server:$IMAGE_TAG}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.13-slim-bookworm}
DOCKER_BUILD_FLAGS=${DOCKER_BUILD_FLAGS:-}
DOCKER=${DOCKER:-/usr/bin/docker}
dockerd_log=${CONVEYOR_DOCKERD_LOG:-/var/log/conveyor-dockerd.log}
build_logs=${CONVEYOR_IMAGES_LOGS:-${XDG_CACHE_HOME:-$HOME/.cache}/conveyor-images}

print_images() {
    printf '%s\n' "$OPERATOR_IMAGE" "$STEP_IMAGE" "$SERVER_IMAGE"
}

case ${1:-} in
--print)
    print_images
    exit 0
    ;;
--engine | "") ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

step=""
trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo "images: FAILED at step: $step (exit $rc)" >&2; fi' EXIT
say() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "images: '$*' needs root" >&2
        return 1
    fi
}

apt_updated=""
apt_install() {
    if [[ -z $apt_updated ]]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

engine_up() { "$DOCKER" info >/dev/null 2>&1; }

ensure_engine() {
    step="docker engine"
    engine_up && return 0
    if ! command -v "$DOCKER" >/dev/null || ! { command -v dockerd || [[ -x /usr/sbin/dockerd ]]; } >/dev/null; then
        say "installing docker.io with apt-get"
        apt_install docker.io
        engine_up && return 0
    fi
    say "starting dockerd in the background (log: $dockerd_log)"
    as_root mkdir -p "$(dirname "$dockerd_log")"
    local mark i
    mark=$(($(wc -l <"$dockerd_log" 2>/dev/null || echo 0) + 1))
    # setsid --fork: the engine is in a session of its own, outlives this script and its terminal, and
    # is left running for the next build.
    as_root sh -c 'exec setsid --fork "$0" >>"$1" 2>&1 </dev/null' "$(command -v dockerd || echo /usr/sbin/dockerd)" "$dockerd_log"
    for ((i = 0; i < 120; i++)); do
        engine_up && return 0
        if tail -n "+$mark" "$dockerd_log" 2>/dev/null | grep -q -e 'failed to start daemon' -e 'level=fatal'; then
            engine_up && return 0 # another dockerd won the race for the socket
            tail -n "+$mark" "$dockerd_log" | tail -n 20 >&2
            echo "images: dockerd exited; its log is $dockerd_log" >&2
            return 1
        fi
        sleep 0.5
    done
    tail -n "+$mark" "$dockerd_log" | tail -n 20 >&2
    echo "images: dockerd did not answer '$DOCKER info' within 60 s" >&2
    return 1
}

ensure_engine
if [[ ${1:-} == --engine ]]; then
    printf 'DOCKER=%s\n' "$DOCKER"
    exit 0
fi

# ---- the base: PYTHON_IMAGE itself, or a stand-in from Debian's packages
step="base image"
builder_image=$PYTHON_IMAGE
if "$DOCKER" image inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
    say "base: $PYTHON_IMAGE (present)"
elif timeout 60 "$DOCKER" pull --quiet "$PYTHON_IMAGE" >/dev/null 2>&1; then
    say "base: $PYTHON_IMAGE (pulled)"
else
    say "base: $PYTHON_IMAGE cannot be pulled; using a stand-in built from Debian's packages"
    standin=$(DOCKER=$DOCKER as_root "$root/images/base/build-base.sh")
    PYTHON_IMAGE=$(sed -n 's/^PYTHON_IMAGE=//p' <<<"$standin")
    builder_image=$(sed -n 's/^BUILDER_IMAGE=//p' <<<"$standin")
    say "base: $PYTHON_IMAGE (builder: $builder_image)"
fi

# ---- what the builder stages' pip needs from the host: its CA bundle, pip.conf and variables
step="pip settings"
scratch=$(mktemp -d)
trap 'rc=$?; rm -rf "$scratch"; if [[ $rc -ne 0 ]]; then echo "images: FAILED at step: $step (exit $rc)" >&2; fi' EXIT
pip_conf=""
for f in "${PIP_CONFIG_FILE:-}" "${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf" "$HOME/.pip/pip.conf" /etc/pip.conf /etc/xdg/pip/pip.conf; do
    if [[ -n $f && -f $f ]]; then
        pip_conf=$f
        break
    fi
done
# The bundle the host's pip trusts: PIP_CERT, else pip.conf's `cert`, else the system's bundle.
pip_ca=${PIP_CERT:-}
if [[ -z $pip_ca && -n $pip_conf ]]; then
    pip_ca=$(sed -nE 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$/\1/p' "$pip_conf" | head -n 1)
fi
pip_ca=${pip_ca:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
: >"$scratch/pip.env"
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT PIP_RETRIES PIP_PROXY \
    HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [[ -n ${!var:-} ]]; then
        printf 'export %s=%q\n' "$var" "${!var}" >>"$scratch/pip.env"
    fi
done
secrets=(--secret "id=pip-env,src=$scratch/pip.env")
[[ ! -f $pip_ca ]] || secrets+=(--secret "id=pip-ca,src=$pip_ca")
[[ -z $pip_conf ]] || secrets+=(--secret "id=pip-conf,src=$pip_conf")

# ---- the three images
mkdir -p "$build_logs"
build() {
    local target=$1 image=$2 start=$SECONDS log=$build_logs/build-$1.log before after
    before=$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    step="docker build --target $target (log: $log)"
    # shellcheck disable=SC2086 # DOCKER_BUILD_FLAGS is a list of flags
    DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
        -f "$root/images/Dockerfile" --target "$target" -t "$image" \
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "BUILDER_IMAGE=$builder_image" \
        "${secrets[@]}" $DOCKER_BUILD_FLAGS "$root" >"$log" 2>&1 || {
        tail -n 40 "$log" >&2
        return 1
    }
    # The image this build replaced under the tag, unless something still uses or names it.
    after=$("$DOCKER" image inspect -f '{{.Id}}' "$image")
    if [[ -n $before && $before != "$after" ]]; then
        "$DOCKER" rmi "$before" >/dev/null 2>&1 || true
    fi
    say "$image: built in $((SECONDS - start)) s ($("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}
build operator "$OPERATOR_IMAGE"
build step "$STEP_IMAGE"
build server "$SERVER_IMAGE"
step=""
print_images
