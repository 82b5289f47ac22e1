#!/usr/bin/env bash
# Installs Prometheus and promtool from the distribution's `prometheus` package, for the alert-rule
# tests (promtool check/test rules) and the test environment's Prometheus server. The tests never use
# the packaged service: they run /usr/bin/prometheus with a config, data dir and loopback port of
# their own. So the package's service is kept from starting while it installs (policy-rc.d), and
# stopped and disabled afterwards in case something started it anyway: nothing is left listening.
# Idempotent: a machine that already has promtool and prometheus installs nothing.
#
#   hack/install-prometheus.sh            install if missing, print the bin directory
#   hack/install-prometheus.sh --print    print the bin directory only (exit 1 when not installed)
#
# Needs root (or sudo) only when it has to install. Debian/Ubuntu (apt-get) only.
set -euo pipefail

say() { printf '[install-prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin_dir() {
    local promtool prometheus
    promtool=$(command -v promtool 2>/dev/null || true)
    prometheus=$(command -v prometheus 2>/dev/null || true)
    if [[ -n $promtool && -n $prometheus && $(dirname "$promtool") == $(dirname "$prometheus") ]]; then
        dirname "$promtool"
        return 0
    fi
    return 1
}

if [[ ${1:-} == --print ]]; then
    bin_dir
    exit $?
fi

if dir=$(bin_dir); then
    say "already installed: $dir"
    printf '%s\n' "$dir"
    exit 0
fi

command -v apt-get >/dev/null || { say "apt-get not found: install prometheus and promtool yourself"; exit 1; }
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { say "not root and no sudo: run as root or install prometheus yourself"; exit 1; }
    sudo=(sudo)
fi

# invoke-rc.d asks policy-rc.d whether a package may start its service; 101 means "no". Only a
# policy file this script created is removed again; an existing one is left as it is.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# hack/install-prometheus.sh: no service starts while it installs\nexit 101\n' \
        | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=true
fi
remove_policy() { if $own_policy; then "${sudo[@]}" rm -f "$policy"; fi; }
trap remove_policy EXIT

say "installing prometheus with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
# Without recommends: the exporters and the web console libraries are not needed.
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >&2

# Whatever init system there is, the packaged server must not run or start at boot.
if command -v systemctl >/dev/null; then
    # disable works without a running systemd (it removes the unit's symlinks); --now also stops it.
    now=(); [[ -d /run/systemd/system ]] && now=(--now)
    "${sudo[@]}" systemctl disable "${now[@]}" prometheus.service >&2 2>&1 || true
fi
if [[ -x /etc/init.d/prometheus ]]; then
    "${sudo[@]}" /etc/init.d/prometheus stop >&2 2>&1 || true
    command -v update-rc.d >/dev/null && { "${sudo[@]}" update-rc.d prometheus disable >&2 2>&1 || true; }
fi

dir=$(bin_dir) || { say "prometheus installed but prometheus/promtool not found on PATH"; exit 1; }
say "installed: $dir ($("$dir/promtool" --version 2>&1 | head -n 1))"
printf '%s\n' "$dir"
