"""Bad input gets a clear exception, never a crash: wrong dtype, shape, contiguity, NaN, missing
and corrupt files, and the C library's own errors with its message."""
import os

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def m(unet_mod):
    return unet_mod.create("unet", base=2, depth=2, seed=0)


def test_missing_and_corrupt_files(unet_mod, tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        unet_mod.load(tmp_path / "nope.safetensors")
    with pytest.raises(IsADirectoryError):
        unet_mod.load(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(unet_mod.FormatError) as e:
        unet_mod.load(bad)
    assert "bad.safetensors" in str(e.value) and e.value.status == "bad file format"
    assert isinstance(e.value, unet_mod.Error) and isinstance(e.value, ValueError)
    # A corrupt checkpoint from the robustness tests: the C message names the tensor.
    nan = os.path.join(ROOT, "tests", "data", "corrupt", "model_nan_weight.safetensors")
    with pytest.raises(unet_mod.Error, match="weight"):
        unet_mod.load(nan)
    with pytest.raises(FileNotFoundError):
        unet_mod.imread(tmp_path / "nope.png")
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(unet_mod.FormatError, match="x.png"):
        unet_mod.imread(tmp_path / "x.png")


def test_bad_images(unet_mod, m):
    with pytest.raises(ValueError, match="non-finite value nan at image 0, channel 0, y=3, x=4"):
        a = np.zeros((16, 16), np.float32)
        a[3, 4] = np.nan
        m.predict(a)
    with pytest.raises(ValueError, match="non-finite value inf"):
        m.predict(np.full((16, 16), np.inf))
    with pytest.raises(TypeError, match="complex"):
        m.predict(np.zeros((16, 16), np.complex64))
    with pytest.raises(TypeError, match="not an image type"):
        m.predict(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="expected a 2-D image"):
        m.predict(np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="has 2 channels; the model takes 1"):
        m.predict(np.zeros((2, 2, 16, 16), np.float32))  # a stack of two 2-channel images
    with pytest.raises(ValueError, match="does not fit in int32"):
        m.predict(np.full((16, 16), 2**40, np.int64))
    with pytest.raises(ValueError, match="outside the float32 range"):
        m.predict(np.full((16, 16), 1e300))
    with pytest.raises(ValueError, match="norm"):
        m.predict(np.zeros((16, 16), np.float32), norm="z-score")
    with pytest.raises(ValueError, match="threads"):
        m.predict(np.zeros((16, 16), np.float32), threads=0)
    with pytest.raises(ValueError, match="tta"):
        m.predict(np.zeros((16, 16), np.float32), tta=True, logits=True)
    m3 = unet_mod.create("unet", in_channels=3, base=2, depth=2)
    with pytest.raises(ValueError, match="has 4 channels; the model takes 3: channels= chooses"):
        m3.predict(np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="has 1 channel; the model takes 3"):
        m3.predict(np.zeros((16, 16), np.uint8))
    # The C library's own refusal, with its message: an image too small for valid convolutions.
    paper = unet_mod.create("unet-paper", base=2, depth=2)
    with pytest.raises(unet_mod.Error) as e:
        paper.forward(np.zeros((1, 1, 20, 20), np.float32))
    assert "too small" in str(e.value) or "smaller" in str(e.value), str(e.value)
    with pytest.raises(TypeError, match="float32"):
        m.forward(np.zeros((1, 1, 16, 16)))
    with pytest.raises(ValueError, match="non-finite"):
        m.forward(np.full((1, 1, 16, 16), np.nan, np.float32))


def test_core_layer_checks_every_buffer(unet_mod, m):
    """The extension itself refuses what the Python layer would never pass: a non-contiguous or
    read-only buffer, a wrong size, a wrong channel count."""
    core = m._m
    img = np.zeros((16, 16), np.float32)
    out = np.zeros((2, 16, 16), np.float32)
    lab = np.zeros((16, 16), np.uint8)
    args = (0, -1, 0, 1, 0)  # tile, overlap, tta, batch, threads
    with pytest.raises(ValueError, match="C-contiguous"):
        core.predict(np.zeros((16, 32), np.float32)[:, ::2], 4, 1, 16, 16, 0, out, 0, lab, None,
                     2, *args)
    with pytest.raises(ValueError, match="expected 1024 bytes, got 1020"):
        core.predict(np.zeros(255, np.float32), 4, 1, 16, 16, 0, out, 0, lab, None, 2, *args)
    ro = np.zeros((2, 16, 16), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        core.predict(img, 4, 1, 16, 16, 0, ro, 0, lab, None, 2, *args)
    with pytest.raises(ValueError, match="2 channels; the model takes 1"):
        core.predict(img, 4, 2, 16, 8, 0, out, 0, lab, None, 2, *args)
    with pytest.raises(ValueError, match="unknown dtype"):
        core.predict(img, 9, 1, 16, 16, 0, out, 0, lab, None, 2, *args)
    with pytest.raises(ValueError, match="bad image size"):
        core.predict(img, 4, 1, -16, -16, 0, out, 0, lab, None, 2, *args)


def test_evaluate_errors(unet_mod):
    t = np.zeros((8, 8), np.int32)
    with pytest.raises(ValueError, match="differs"):
        unet_mod.evaluate(np.zeros((8, 9), np.int32), t)
    with pytest.raises(ValueError, match="one image"):
        unet_mod.evaluate(np.zeros((2, 8, 8), np.int32), np.zeros((2, 8, 8), np.int32))
    with pytest.raises(TypeError, match="integer labels"):
        unet_mod.evaluate(np.zeros((8, 8), np.float32), t)
    p = t.copy()
    p[2, 3] = 5
    with pytest.raises(unet_mod.ArgumentError) as e:  # C: a class id outside [0, classes)
        unet_mod.evaluate(p, t, classes=2)
    assert "pred" in str(e.value) and e.value.status == "invalid argument"


def test_create_errors(unet_mod):
    with pytest.raises(unet_mod.ArgumentError, match="depth"):
        unet_mod.create("unet", depth=12)
    with pytest.raises(unet_mod.ArgumentError):
        unet_mod.create("resnet")
