#!/bin/sh
# Installs the Debian 12 packages unet needs to build and test, if any are missing.
# Usage: scripts/deps.sh [extra-package ...]   (make runs it; as root it calls apt-get)
set -e
need="gcc make libc6-dev libopenblas-openmp-dev libpng-dev libtiff-dev libcjson-dev $*"
missing=""
for p in $need; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "unet: installing missing packages:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "unet: not root; run: sudo apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y $missing || { apt-get update && apt-get install -y $missing; }
