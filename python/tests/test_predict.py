"""unet.Model.predict, info and unet.evaluate against the command line, and how they use memory
and the GIL."""
import json
import os
import tracemalloc

import numpy as np
import pytest

from conftest import run_unet, sample_png, ticks_during, ROOT


def _tif_pages(unet_mod, path):
    """A probability TIFF of unet predict (two classes: one page per class) as (K, H, W)."""
    return np.stack([unet_mod.imread(path, page=k) for k in range(unet_mod.image_pages(path))])


def test_png_with_tiles_equals_cli_bit_for_bit(small_model, unet_mod, tmp_path):
    path, m = small_model
    png = sample_png()
    stem = os.path.splitext(os.path.basename(png))[0]
    out, logit_dir = tmp_path / "out", tmp_path / "logits"
    run_unet("predict", "--model", path, "--input", png, "--output", out, "--logits", logit_dir,
             "--probabilities", "--instances", "--tile", 128, "--quiet")
    img = unet_mod.imread(png)
    assert img.dtype == np.uint8 and img.shape == (512, 512)
    labels, prob, inst, logits = m.predict(img, tile=128, probabilities=True, instances=True,
                                           logits=True)
    cli_logits = np.load(logit_dir / f"{stem}_logits.npy")
    assert logits.dtype == np.float32 and logits.shape == (2, 512, 512)
    assert logits.tobytes() == cli_logits.tobytes()
    assert prob.tobytes() == _tif_pages(unet_mod, out / f"{stem}_prob.tif").tobytes()
    assert np.array_equal(unet_mod.imread(out / f"{stem}.png"), labels * np.uint8(255))
    assert np.array_equal(unet_mod.imread(out / f"{stem}_instances.tif"), inst)
    assert labels.dtype == np.uint8 and inst.dtype == np.int32
    assert 0.05 < labels.mean() < 0.95 and inst.max() > 1  # a real segmentation, not a constant
    # Without logits the CLI takes the probabilities path; so does Python.
    run_unet("predict", "--model", path, "--input", png, "--output", tmp_path / "p", "--tta",
             "--probabilities", "--quiet")
    labels2, prob2 = m.predict(img, tta=True, probabilities=True)
    assert prob2.tobytes() == _tif_pages(unet_mod, tmp_path / "p" / f"{stem}_prob.tif").tobytes()
    assert np.array_equal(unet_mod.imread(tmp_path / "p" / f"{stem}.png"), labels2 * np.uint8(255))


def test_precision_equals_cli(small_model, unet_mod, tmp_path):
    """precision="bf16" is unet predict --precision bf16, bit for bit (bf16 where the CPU has
    AVX512_BF16, fp32 elsewhere, both sides alike); the default is fp32 again afterwards."""
    path, m = small_model
    png = sample_png()
    stem = os.path.splitext(os.path.basename(png))[0]
    img = unet_mod.imread(png)
    for precision in ("bf16", "fp32"):
        run_unet("predict", "--model", path, "--input", png, "--output", tmp_path / precision,
                 "--logits", tmp_path / f"l{precision}", "--precision", precision, "--quiet")
        _, logits = m.predict(img, logits=True, precision=precision)
        cli = np.load(tmp_path / f"l{precision}" / f"{stem}_logits.npy")
        assert logits.tobytes() == cli.tobytes()
    _, default = m.predict(img, logits=True)
    assert default.tobytes() == logits.tobytes()  # fp32, the last one asked
    with pytest.raises(ValueError, match="precision"):
        m.predict(img, precision="fp16")


def test_cache_switch(unet_mod):
    """Model.cache turns the inference cache off and on (unet_model_set_cache); the
    predictions are the same bits either way, and cache_bytes is its size."""
    m = unet_mod.create("unet", base=16, depth=2, seed=3)
    img = np.random.default_rng(1).random((48, 40), dtype=np.float32)
    assert m.cache is True and m.cache_bytes > 0
    a = [m.predict(img, logits=True)[1] for _ in range(2)]  # the second made and read it
    m.cache = False
    assert m.cache is False
    b = m.predict(img, logits=True)[1]
    m.cache = True
    assert a[0].tobytes() == a[1].tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int64", "float32", "float64",
                                   "bool"])
def test_npy_of_each_dtype_equals_cli(small_model, tmp_path, dtype):
    """Normalisation by dtype (8-bit / 255, 16-bit by percentiles, the rest as it is) is the
    CLI's: the same array through np.save and `unet predict` gives the same bytes."""
    path, m = small_model
    rng = np.random.default_rng(3)
    hi = {"uint8": 255, "uint16": 4000, "int16": 300, "int64": 1000, "bool": 2}.get(dtype)
    a = (rng.integers(0, hi, (100, 90)) if hi else rng.normal(0.5, 0.3, (100, 90))).astype(dtype)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", a)
    run_unet("predict", "--model", path, "--input", tmp_path / "in" / "x.npy", "--output",
             tmp_path / "out", "--logits", tmp_path / "cli_logits.npy", "--quiet")
    labels, logits = m.predict(a, logits=True)
    assert logits.tobytes() == np.load(tmp_path / "cli_logits.npy").tobytes()
    mask = np.load(tmp_path / "out" / "x.npy")
    assert mask.dtype == labels.dtype == np.uint8 and np.array_equal(mask, labels)


def test_stacks_channels_and_views(unet_mod):
    m = unet_mod.create("unet", base=4, depth=2, seed=5)
    rng = np.random.default_rng(0)
    stack = rng.random((3, 40, 36), dtype=np.float32)
    # unet's rule reads (3, 40, 36) as one 3-channel image; "none" makes it a stack.
    with pytest.raises(ValueError, match="channel_axis='none' reads"):
        m.predict(stack)
    got = m.predict(stack, probabilities=True, channel_axis="none")
    assert got[0].shape == (3, 40, 36) and got[1].shape == (3, 2, 40, 36)
    for i in range(3):
        one = m.predict(stack[i], probabilities=True)
        assert np.array_equal(got[0][i], one[0]) and got[1][i].tobytes() == one[1].tobytes()
    # A strided view is read as the array it shows.
    big = rng.random((80, 72), dtype=np.float32)
    assert m.predict(big[::2, ::2], logits=True)[1].tobytes() == \
        m.predict(np.ascontiguousarray(big[::2, ::2]), logits=True)[1].tobytes()
    # Two channels: (H, W, C), (C, H, W) with channel_axis=0 and a stack (N, H, W, C) agree.
    m2 = unet_mod.create("unet", in_channels=2, base=4, depth=2, seed=5)
    hwc = rng.integers(0, 255, (32, 48, 2)).astype(np.uint8)
    a = m2.predict(hwc, logits=True)[1]
    b = m2.predict(np.moveaxis(hwc, -1, 0), channel_axis=0, logits=True)[1]
    c = m2.predict(np.stack([hwc, hwc]), logits=True)[1]
    assert a.shape == (2, 32, 48)
    assert a.tobytes() == b.tobytes() == c[0].tobytes() == c[1].tobytes()
    # Thread counts do not change the result.
    assert m.predict(big, threads=1, logits=True)[1].tobytes() == \
        m.predict(big, threads=2, logits=True)[1].tobytes()


def test_float32_input_is_not_copied(unet_mod):
    """tracemalloc sees numpy's and the extension's allocations (PyMem_RawMalloc): a float32
    C-contiguous image adds nothing beyond the outputs, while a float64 one adds its float32
    copy."""
    m = unet_mod.create("unet", base=2, depth=2, seed=0)
    H, W = 512, 768
    img64 = np.random.default_rng(0).random((H, W))
    img32 = img64.astype(np.float32)
    m.predict(img32[:64, :64])  # warm up: the model's plan and any lazy allocation

    def peak(img):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        m.predict(img)
        p = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return p

    outputs = 2 * H * W * 4 + H * W + H * W * 4  # probabilities, uint8 labels, argmax scratch
    p32, p64 = peak(img32), peak(img64)
    assert p32 < outputs + H * W * 4 // 4, (p32, outputs)
    assert p64 >= p32 + H * W * 4, (p32, p64)


def test_gil_is_released_during_predict(unet_mod):
    m = unet_mod.create("unet", base=8, depth=3, seed=0)
    img = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    d, inside = ticks_during(lambda: m.predict(img, threads=1))
    assert d > 0.05 and inside > 10, (d, inside)


def test_info_matches_cli(small_model):
    path, m = small_model
    d = m.info(size=(256, 200))
    cli = run_unet("info", path, "--size", "256x200").stdout
    assert d["arch"] == "unet" and d["base"] == 4 and d["depth"] == 3 and d["classes"] == 2
    assert f"parameters     {d['parameters']}\n" in cli
    assert f"input          256x200 -> output {d['output'][0]}x{d['output'][1]}" in cli
    assert f"forward        {d['flops'] / 1e9:.1f} GFLOP" in cli
    assert d["tensors"] == len(m.tensors()) and m.tensors()[0][0] == "inc.double_conv.0.weight"


def test_evaluate_matches_cli(small_model, unet_mod, tmp_path):
    path, m = small_model
    png = sample_png()
    stem = os.path.splitext(os.path.basename(png))[0]
    truth_png = os.path.join(ROOT, "data", "sample", "test", "masks", os.path.basename(png))
    run_unet("predict", "--model", path, "--input", png, "--output", tmp_path, "--instances",
             "--quiet")
    cli = json.loads(run_unet("eval", "--pred", tmp_path, "--truth", os.path.dirname(truth_png),
                              "--json").stdout)["images"][0]
    labels, inst = m.predict(unet_mod.imread(png), instances=True)
    truth = (unet_mod.imread(truth_png) != 0).astype(np.uint8)
    got = unet_mod.evaluate(labels, truth, pred_instances=inst)
    for k in ("pixel_error", "rand_error", "seg", "ap50"):
        assert got[k] == pytest.approx(cli[k], rel=1e-5), k
    assert got["iou"] == pytest.approx(cli["iou"], rel=1e-5)
    assert got["n_true"] == cli["objects_true"] and got["n_pred"] == cli["objects_pred"]
    assert stem in cli["name"]
    # A perfect prediction, and the class count inferred from the ids.
    same = unet_mod.evaluate(truth, truth)
    assert same["pixel_error"] == 0 and same["mean_dice"] == 1 and same["classes"] == 2
