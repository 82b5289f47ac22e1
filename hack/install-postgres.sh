#!/usr/bin/env bash
# Installs PostgreSQL server binaries from the distribution's packages for the SQL-ingest tests.
# The tests never use the packaged cluster: their fixture runs initdb + pg_ctl in a temp dir on a
# free loopback port. Idempotent: a machine that already has initdb and pg_ctl installs nothing.
#
#   hack/install-postgres.sh            install if missing, print the bin directory
#   hack/install-postgres.sh --print    print the bin directory only (exit 1 when not installed)
#
# Needs root (or sudo) only when it has to install. Debian/Ubuntu (apt-get) only.
set -euo pipefail

say() { printf '[install-postgres %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The newest installed server's bin directory (Debian keeps them in /usr/lib/postgresql/<major>/bin).
bin_dir() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
        printf '%s\n' "$dir"
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

command -v apt-get >/dev/null || { say "apt-get not found: install the PostgreSQL server (initdb, pg_ctl) yourself"; exit 1; }
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { say "not root and no sudo: run as root or install postgresql yourself"; exit 1; }
    sudo=(sudo)
fi

say "installing postgresql with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# The package's own cluster is not used; policy-rc.d may keep it from starting, which is fine.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql >&2
dir=$(bin_dir) || { say "postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql"; exit 1; }
say "installed: $dir"
printf '%s\n' "$dir"
