#!/bin/sh
# The Python package's tests: pytest over python/tests with the extension built by
# `make python-ext` in $UNET_PYTHONPATH (default build/python), the CLI in $UNET_BIN, and ONNX
# Runtime from tests/onnx (installed there with npm on first use: scripts/onnxruntime.sh).
# python/tests/conftest.py prints "N passed, N failed" last, counting every skipped test as
# failed: a missing package is an error here, never a silent skip (scripts/deps.sh installs
# them).  tests/run.sh runs this script like a test program.
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-/usr/bin/python3}
export UNET_BIN="$(realpath "${UNET_BIN:-build/unet}")"
export UNET_PYTHONPATH="$(realpath "${UNET_PYTHONPATH:-build/python}")"
if ! scripts/onnxruntime.sh tests/onnx; then
    echo "FAIL: ONNX Runtime could not be installed in tests/onnx (npm)"
    echo "0 passed, 1 failed"
    exit 1
fi
# -P: the working directory is not put on sys.path (the checkout's python/unet has no
# extension); the package under test is the one in $UNET_PYTHONPATH.
PYTHONPATH="$UNET_PYTHONPATH" PYTHONDONTWRITEBYTECODE=1 \
    exec "$PY" -P -m pytest -q -p no:cacheprovider python/tests
