#!/bin/sh
# Installs the Debian packages libdedup builds with, only when missing.
# Usage: scripts/install-deps.sh [extra-package ...]
set -e
pkgs="g++ make binutils python3 python3-yaml dpkg-dev gnuplot-nox libxxhash-dev libunwind-dev googletest libgtest-dev $*"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
