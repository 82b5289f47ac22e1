#!/usr/bin/env bash
# Installs Debian's Chromium for the web console's browser tests (tests/console/). The tests drive it
# with Playwright pointed at this executable; no test tool ever downloads a browser of its own.
# Idempotent: a machine that already has the executable installs nothing.
#
#   hack/install-chromium.sh            install if missing, print the executable's path
#   hack/install-chromium.sh --print    print the path only (exit 1 when not installed)
#
# Needs root (or sudo) only when it has to install. Debian/Ubuntu (apt-get) only.
set -euo pipefail

say() { printf '[install-chromium %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

executable() {
    local path=${CONVEYOR_CHROMIUM:-/usr/bin/chromium}
    if [[ -x $path ]]; then
        printf '%s\n' "$path"
        return 0
    fi
    return 1
}

if [[ ${1:-} == --print ]]; then
    executable
    exit $?
fi

if path=$(executable); then
    say "already installed: $path"
    printf '%s\n' "$path"
    exit 0
fi

command -v apt-get >/dev/null || { say "apt-get not found: install Chromium yourself (or set CONVEYOR_CHROMIUM)"; exit 1; }
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { say "not root and no sudo: run as root or install chromium yourself"; exit 1; }
    sudo=(sudo)
fi

say "installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# Fonts come with the package's dependencies; recommends (drivers, extensions) are not needed headless.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
path=$(executable) || { say "chromium installed but ${CONVEYOR_CHROMIUM:-/usr/bin/chromium} is not there"; exit 1; }
say "installed: $path ($("$path" --version 2>/dev/null || echo 'version unknown'))"
printf '%s\n' "$path"
