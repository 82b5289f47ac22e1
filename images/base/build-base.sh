#!/usr/bin/env bash
# Builds stand-ins for the release base image (python:3.11-slim-bookworm) from Debian's own packages,
# for machines that cannot pull it: `debootstrap --variant=minbase` of a pinned suite from the Debian
# mirror the host's apt uses, Python of the same minor as the release base, security updates
# applied, apt lists, docs and caches removed, then `docker import`. Two images share one rootfs:
#
#   runtime  python3 (Debian's, /usr/bin/python3), ca-certificates, netbase, tzdata: the final stages
#   builder  the same plus python3-venv (ensurepip) and binutils (strip), for the builder stages only
#
# Both are tagged by a hash of this script and the mirrors it read, so a machine that has them
# skips the build (~90 s cold on 2 cores).
#
#   images/base/build-base.sh            build what is missing, then print the references
#   images/base/build-base.sh --print    print the references only:
#                                        PYTHON_IMAGE=localhost/conveyor/python:<tag>
#                                        BUILDER_IMAGE=localhost/conveyor/python-builder:<tag>
#
# Needs root (debootstrap, chroot). Installs debootstrap with apt-get when it is missing.
# Settings: DOCKER (default /usr/bin/docker), CONVEYOR_BASE_WORKDIR (scratch space, default /var/tmp).
set -euo pipefail

SUITE=bookworm
PYTHON_MINOR=3.11
RUNTIME_PACKAGES=python3,ca-certificates,netbase,tzdata
BUILDER_PACKAGES=(python3-venv binutils)
DOCKER=${DOCKER:-/usr/bin/docker}

say() { printf '[build-base %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# mirror_for SUITE: the first enabled `deb` source of the host's apt that serves SUITE with `main`,
# from /etc/apt/sources.list.d/*.sources (deb822) and sources.list / sources.list.d/*.list (one-line).
mirror_for() {
    local suite=$1 f
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -f $f ]] || continue
            awk -v want="$suite" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" want "( |$)") && comps ~ /(^| )main( |$)/ && enabled != "no")
                        { split(uris, u, " "); print u[1] }
                    types = uris = suites = comps = ""; enabled = "yes"
                }
                BEGIN { enabled = "yes" }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
                  if (key == "types") types = $0; else if (key == "uris") uris = $0
                  else if (key == "suites") suites = $0; else if (key == "components") comps = $0
                  else if (key == "enabled") enabled = tolower($0) }
                END { flush() }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -f $f ]] || continue
            # deb [options] URI SUITE COMPONENT...
            sed -E 's/#.*//; s/\[[^]]*\]//' "$f" |
                awk -v want="$suite" '$1 == "deb" && $3 == want { for (i = 4; i <= NF; i++) if ($i == "main") { print $2; break } }'
        done
    } | head -n 1
}

mirror=$(mirror_for "$SUITE")
[[ -n $mirror ]] || { echo "build-base: the host's apt sources name no mirror for '$SUITE main'" >&2; exit 1; }
updates_mirror=$(mirror_for "$SUITE-updates")
security_mirror=$(mirror_for "$SUITE-security")
arch=$(dpkg --print-architecture)
inputs=$(printf '%s\n' "$(cat "${BASH_SOURCE[0]}")" "$mirror" "$updates_mirror" "$security_mirror" "$arch" | sha256sum | cut -c1-12)
tag=$PYTHON_MINOR-$SUITE-$inputs
runtime_image=localhost/conveyor/python:$tag
builder_image=localhost/conveyor/python-builder:$tag

print_images() { printf 'PYTHON_IMAGE=%s\nBUILDER_IMAGE=%s\n' "$runtime_image" "$builder_image"; }

if [[ ${1:-} == --print ]]; then
    print_images
    exit 0
fi
if "$DOCKER" image inspect "$runtime_image" "$builder_image" >/dev/null 2>&1; then
    say "cached: $runtime_image, $builder_image"
    print_images
    exit 0
fi

[[ $EUID -eq 0 ]] || { echo "build-base: debootstrap needs root" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring
fi
# The host's apt proxy, if it has one, for debootstrap and for apt inside the chroot.
eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
[[ -z ${http_proxy:-} ]] || export http_proxy

work=$(mktemp -d "${CONVEYOR_BASE_WORKDIR:-/var/tmp}/conveyor-base.XXXXXX")
rootfs=$work/rootfs
cleanup() {
    # debootstrap mounts /proc and /sys inside the rootfs; an interrupted run can leave them mounted.
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r); do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$SECONDS
say "debootstrap $SUITE ($arch) from the host's Debian mirror"
debootstrap --variant=minbase --arch="$arch" --include="$RUNTIME_PACKAGES" \
    "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}

{
    echo "deb $mirror $SUITE main"
    [[ -z $updates_mirror ]] || echo "deb $updates_mirror $SUITE-updates main"
    [[ -z $security_mirror ]] || echo "deb $security_mirror $SUITE-security main"
} >"$rootfs/etc/apt/sources.list"
# Later apt installs in images built on these stay slim too (as in Debian's own -slim images).
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/conveyor-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# https mirrors: the host's CA bundle (which may hold extra CAs), for these apt runs only.
cp "$(readlink -f /etc/ssl/certs/ca-certificates.crt)" "$rootfs/tmp/host-ca.crt"
in_root() {
    chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        http_proxy="${http_proxy:-}" "$@"
}
apt_in_root() {
    in_root apt-get -qq -y -o Acquire::https::CaInfo=/tmp/host-ca.crt -o Dpkg::Options::=--force-confold "$@" \
        >>"$work/apt.log" 2>&1 || {
        tail -n 30 "$work/apt.log" >&2
        exit 1
    }
}
say "applying $SUITE-updates and $SUITE-security"
apt_in_root update
apt_in_root upgrade
in_root dpkg-query -W -f '${Package}\n' | sort >"$work/runtime-packages"
say "adding the builder's packages: ${BUILDER_PACKAGES[*]}"
apt_in_root install --no-install-recommends "${BUILDER_PACKAGES[@]}"

python_version=$(in_root python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
[[ $python_version == "$PYTHON_MINOR".* ]] || {
    echo "build-base: $SUITE has Python $python_version, not $PYTHON_MINOR" >&2
    exit 1
}

trim() {
    in_root apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/etc/hostname"
}

import_rootfs() {
    local image=$1 description=$2
    tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL dev.conveyor.base.inputs=$inputs dev.conveyor.base.python=$python_version" \
        --change "LABEL org.opencontainers.image.description=\"$description\"" \
        --change 'CMD ["python3"]' \
        - "$image" >/dev/null
    say "imported $image ($("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

trim
import_rootfs "$builder_image" "Debian $SUITE, Python $python_version, python3-venv and binutils: Conveyor's builder base"
# The runtime: exactly the packages installed before the builder's were added.
in_root dpkg-query -W -f '${Package}\n' | sort | comm -13 "$work/runtime-packages" - >"$work/builder-only"
# shellcheck disable=SC2046 # one package name a line
in_root dpkg --purge $(cat "$work/builder-only") >/dev/null
trim
import_rootfs "$runtime_image" "Debian $SUITE with Python $python_version: Conveyor's runtime base"
say "built in $((SECONDS - start)) s (Python $python_version)"
print_images
