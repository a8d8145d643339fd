"""Shared pieces of the Python package's tests (run by tests/python.sh, which make test calls).

The last line pytest prints here is "N passed, N failed", the summary tests/run.sh adds up:
skipped tests and errors count as failed, so nothing is skipped silently.
"""
import json
import os
import struct
import subprocess
import threading
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_BIN = os.environ.get("UNET_BIN", os.path.join(ROOT, "build", "unet"))
SAMPLE = os.path.join(ROOT, "data", "sample", "test", "images")


def pytest_terminal_summary(terminalreporter):
    st = terminalreporter.stats
    passed = len(st.get("passed", []))
    failed = sum(len(st.get(k, [])) for k in ("failed", "error", "skipped", "xfailed", "xpassed"))
    if passed + failed == 0:
        failed = 1  # no test ran at all
    terminalreporter.write_line(f"{passed} passed, {failed} failed")


def sample_png():
    names = sorted(f for f in os.listdir(SAMPLE) if f.endswith(".png"))
    return os.path.join(SAMPLE, names[0])


def run_unet(*args, check=True):
    """Runs the CLI; returns the CompletedProcess (stdout and stderr as text)."""
    r = subprocess.run([UNET_BIN, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"unet {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r


def run_ort(jobs, tmp_path):
    """Runs ONNX models in ONNX Runtime (tests/onnx/ort_run.js): jobs is a list of
    (model path, input float32 array); returns the first output of each."""
    spec = []
    for i, (model, x) in enumerate(jobs):
        xin, yout = tmp_path / f"ort_in{i}.npy", tmp_path / f"ort_out{i}.npy"
        np.save(xin, np.ascontiguousarray(x, dtype=np.float32))
        spec.append({"model": str(model), "input": str(xin), "output": str(yout)})
    jf = tmp_path / "ort_jobs.json"
    jf.write_text(json.dumps(spec))
    r = subprocess.run(["node", os.path.join(ROOT, "tests", "onnx", "ort_run.js"), str(jf)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"ONNX Runtime failed:\n{r.stderr}"
    return [np.load(s["output"]) for s in spec]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


def write_safetensors(path, header, blob):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob)


def perturb(src, dst, seed=0):
    """A copy of checkpoint src with every trainable tensor and batch-norm statistic drawn at
    random (so that a swapped or missing parameter in an exported graph shows in its output),
    scaled to keep activations near unit size; frozen buffers (FCN's bilinear kernels) kept."""
    header, blob = read_safetensors(src)
    blob = bytearray(blob)
    rng = np.random.default_rng(seed)
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        shape = t["shape"]
        n = int(np.prod(shape)) if shape else 1
        leaf = name.rsplit(".", 1)[-1]
        frozen = leaf == "weight" and len(shape) == 4 and name.split(".")[0].startswith("upscore")
        if frozen:
            continue
        if leaf == "weight" and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            v = rng.normal(0, np.sqrt(2.0 / fan_in), n)
        elif leaf == "running_var":
            v = rng.uniform(0.5, 2.0, n)
        elif leaf == "weight":  # batch-norm gamma
            v = rng.uniform(0.5, 1.5, n)
        else:  # biases, beta, running_mean
            v = rng.normal(0, 0.1, n)
        blob[a:b] = v.astype("<f4").tobytes()
    write_safetensors(dst, header, bytes(blob))


@pytest.fixture(scope="session")
def unet_mod():
    import unet
    return unet


def set_tensor(path, name, values):
    """Overwrites float32 tensor `name` of a checkpoint in place."""
    header, blob = read_safetensors(path)
    a, b = header[name]["data_offsets"]
    blob = blob[:a] + np.asarray(values, "<f4").tobytes() + blob[b:]
    write_safetensors(path, header, blob)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, unet_mod):
    """A small seed U-Net (base 4, depth 3) with random parameters whose output bias splits the
    sample image about in half between the two classes (so masks and instances are not
    constant), saved: (path, model)."""
    d = tmp_path_factory.mktemp("small")
    path = d / "model.safetensors"
    unet_mod.create("unet", base=4, depth=3, seed=1).save(d / "fresh.safetensors")
    perturb(d / "fresh.safetensors", path, seed=1)
    img = unet_mod.imread(sample_png())
    _, logits = unet_mod.load(path).predict(img, logits=True)
    header, blob = read_safetensors(path)
    a, _ = header["outc.conv.bias"]["data_offsets"]
    bias = np.frombuffer(blob[a:a + 8], "<f4").copy()
    bias[1] -= np.median(logits[1] - logits[0])
    set_tensor(path, "outc.conv.bias", bias)
    return path, unet_mod.load(path)


def ticks_during(work):
    """Runs work() in a thread while this one counts how often it gets to run: (the seconds work
    took, the ticks in the middle half of them).  Many ticks: work released the GIL."""
    span = {}

    def timed():
        t0 = time.perf_counter()
        work()
        span["t"] = (t0, time.perf_counter())

    th = threading.Thread(target=timed)
    ticks = []
    th.start()
    while th.is_alive():
        ticks.append(time.perf_counter())
        for _ in range(1000):
            pass
    th.join()
    t0, t1 = span["t"]
    d = t1 - t0
    return d, len([t for t in ticks if t0 + 0.25 * d < t < t1 - 0.25 * d])
