#!/bin/sh
# Installs the Debian 12 packages unet needs to build and test, if any are missing.
# Usage: scripts/deps.sh [extra-package ...]   (make runs it; as root it calls apt-get)
# Open MPI (openmpi-bin, libopenmpi-dev) is for make MPI=1 and tests/mpi.sh (docs/scaling.md).
# The Python package's tests (tests/python.sh) need python3 with numpy, pytest, onnx (the ONNX
# checker), yaml and PIL (masks with colour tables), and node with npm for ONNX Runtime
# (scripts/onnxruntime.sh).  node and npm count as present when they are on PATH (e.g. from
# NodeSource), else Debian's are installed.
set -e
need="gcc make libc6-dev libopenblas-openmp-dev libpng-dev libtiff-dev libcjson-dev
python3-dev python3-numpy python3-setuptools python3-pip python3-pytest python3-onnx python3-yaml
python3-pil openmpi-bin libopenmpi-dev $*"
command -v node >/dev/null 2>&1 || need="$need nodejs"
command -v npm >/dev/null 2>&1 || need="$need npm"
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
