#!/bin/sh
# Installs onnxruntime-node (the version in DIR/package.json) into DIR/node_modules with npm,
# unless it is there already: offline once installed.  The tests run exported ONNX models in it
# (tests/onnx, tests/python.sh); bench/run installs its own copy the same way.
# ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries ship in the package; the CUDA ones its install
# script would fetch from elsewhere are not needed.
# Usage: scripts/onnxruntime.sh DIR
set -e
dir=${1:?usage: scripts/onnxruntime.sh DIR}
[ -f "$dir/node_modules/onnxruntime-node/package.json" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
    echo "unet: npm not found (scripts/deps.sh installs nodejs and npm)" >&2
    exit 1
fi
echo "unet: installing onnxruntime-node into $dir with npm" >&2
cd "$dir"
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --no-package-lock --loglevel=error >&2
