"""Channel layouts from Python: unet's rule for where a 3-D array's channels are (the library's
unet_channel_axis_of, as `unet predict` reads a .npy), channel_axis= and channels= as
--channel-axis and --channels, and a model's recorded layout (docs/images.md)."""
import numpy as np
import pytest

from conftest import run_unet


def test_the_rule_is_the_library_s(unet_mod):
    core = unet_mod._core
    assert core.channel_axis((64, 48, 3), -100) == 2      # colour last
    assert core.channel_axis((64, 48, 4), -100) == 2
    assert core.channel_axis((3, 64, 48), -100) == 0      # channels first
    assert core.channel_axis((64, 48, 5), -100) == 0      # 5 > 4: first (64 channels)
    assert core.channel_axis((3, 64, 3), -100) == 0       # the others must be larger
    assert core.channel_axis((64, 48), -100) == -1        # no channel axis
    assert core.channel_axis((7, 64, 48), -101) == -1     # none: a stack
    assert core.channel_axis((64, 48, 5), -1) == 2
    assert core.channel_axis((64, 5, 48), 1) == 1
    with pytest.raises(unet_mod.ArgumentError):
        core.channel_axis((64, 48, 3), 3)


def test_layouts_agree_with_the_cli(unet_mod, tmp_path):
    """(H, W, 3) and (3, H, W) arrays, as arrays and as .npy files through `unet predict`,
    give the same logits; (H, W, 5) needs channel_axis."""
    m = unet_mod.create("unet", in_channels=3, base=4, depth=2, seed=2)
    mp = tmp_path / "m3.safetensors"
    m.save(mp)
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 255, (40, 36, 3)).astype(np.uint8)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "hwc.npy", hwc)
    np.save(tmp_path / "in" / "chw.npy", np.moveaxis(hwc, -1, 0).copy())
    run_unet("predict", "--model", mp, "--input", tmp_path / "in", "--output", tmp_path / "o",
             "--logits", tmp_path / "lg", "--quiet")
    a = m.predict(hwc, logits=True)[1]
    b = m.predict(np.moveaxis(hwc, -1, 0), logits=True)[1]
    assert a.tobytes() == b.tobytes()
    for name in ("hwc", "chw"):
        assert np.load(tmp_path / "lg" / f"{name}_logits.npy").tobytes() == a.tobytes()
    m5 = unet_mod.create("unet", in_channels=5, base=4, depth=2, seed=2)
    five = rng.random((40, 36, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="has 40 channels; the model takes 5"):
        m5.predict(five)
    assert m5.predict(five, channel_axis="last", logits=True)[1].tobytes() == \
        m5.predict(np.moveaxis(five, -1, 0), logits=True)[1].tobytes()


def test_channels_and_the_recorded_layout(unet_mod, tmp_path):
    """A model trained with --channels gray records it: Python and the CLI apply it to RGB
    input, bit for bit, and channels= or --channels overrides it."""
    from PIL import Image
    rng = np.random.default_rng(4)
    for d in ("img", "msk", "rgb"):
        (tmp_path / d).mkdir()
    for i in range(2):
        g = rng.integers(0, 255, (48, 40)).astype(np.uint8)
        Image.fromarray(g).save(tmp_path / "img" / f"a{i}.png")
        Image.fromarray(((g > 120) * 255).astype(np.uint8)).save(tmp_path / "msk" / f"a{i}.png")
        rgb = np.stack([g, g // 2, 255 - g], -1).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "rgb" / f"a{i}.png")
    mp = tmp_path / "gray.safetensors"
    run_unet("train", "--images", tmp_path / "rgb", "--masks", tmp_path / "msk", "--out", mp,
             "--steps", 2, "--base", 4, "--depth", 2, "--tile", 32, "--channels", "gray",
             "--quiet")
    m = unet_mod.load(mp)
    assert m.input == {"channel_axis": None, "channels": "gray"} and m.in_channels == 1
    run_unet("predict", "--model", mp, "--input", tmp_path / "rgb" / "a0.png", "--output",
             tmp_path / "o", "--logits", tmp_path / "lg.npy", "--quiet")
    rgb = unet_mod.imread(tmp_path / "rgb" / "a0.png")
    got = m.predict(rgb, logits=True)[1]
    assert got.tobytes() == np.load(tmp_path / "lg.npy").tobytes()
    # The luminance is BT.601's, rounded: the same as the gray image given as it is.
    luma = np.floor(rgb.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5).astype(np.uint8)
    assert got.tobytes() == m.predict(luma, logits=True)[1].tobytes()
    # channels= overrides the record: channel 0 of the RGB image is the gray image itself.
    g0 = unet_mod.imread(tmp_path / "img" / "a0.png")
    assert m.predict(rgb, channels=[0], logits=True)[1].tobytes() == \
        m.predict(g0, logits=True)[1].tobytes()
    with pytest.raises(unet_mod.ShapeError, match="has no channel 3"):
        m.predict(rgb, channels="3")
    with pytest.raises(unet_mod.ArgumentError, match="channels 'blue'"):
        m.predict(rgb, channels="blue")


def test_stacks_and_pages(unet_mod, tmp_path):
    """channel_axis="none": a (N, H, W) .npy is N images, in imread, image_pages, predict and
    the CLI (one output per page)."""
    m = unet_mod.create("unet", base=4, depth=2, seed=3)
    mp = tmp_path / "m.safetensors"
    m.save(mp)
    rng = np.random.default_rng(2)
    stack = rng.random((5, 32, 40), dtype=np.float32)
    np.save(tmp_path / "s.npy", stack)
    assert unet_mod.image_pages(tmp_path / "s.npy") == 1
    assert unet_mod.image_pages(tmp_path / "s.npy", channel_axis="none") == 5
    assert np.array_equal(unet_mod.imread(tmp_path / "s.npy", page=3, channel_axis="none"),
                          stack[3])
    assert unet_mod.imread(tmp_path / "s.npy").shape == (32, 40, 5)
    r = run_unet("predict", "--model", mp, "--input", tmp_path / "s.npy", "--output",
                 tmp_path / "o", "--quiet", check=False)
    assert r.returncode == 1 and "--channel-axis none reads" in r.stderr
    run_unet("predict", "--model", mp, "--input", tmp_path / "s.npy", "--output", tmp_path / "o",
             "--channel-axis", "none", "--quiet")
    labels = m.predict(stack, channel_axis="none")
    for k in range(5):
        assert np.array_equal(np.load(tmp_path / "o" / f"s_p{k}.npy"), labels[k])


def test_train_layout_equals_cli(unet_mod, tmp_path):
    """unet.train(channels=, channel_axis=) reads training data as `unet train --channels
    --channel-axis` does, from folders and from arrays, to the same files byte for byte; masks
    drawn with a colour table (PIL mode "P") are their indices; the layout is recorded, taken
    from the model when resuming, and a resumed run refuses another."""
    from PIL import Image
    rng = np.random.default_rng(7)
    for d in ("rgb", "msk"):
        (tmp_path / d).mkdir()
    images, masks = [], []
    for i in range(3):
        g = rng.integers(0, 255, (48, 40)).astype(np.uint8)
        rgb = np.stack([g, g // 2, 255 - g], -1).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "rgb" / f"a{i}.png")
        p = Image.fromarray((g > 120).astype(np.uint8), mode="P")
        p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)      # index 1 drawn red
        p.save(tmp_path / "msk" / f"a{i}.png")
        images.append(unet_mod.imread(tmp_path / "rgb" / f"a{i}.png"))
        masks.append(np.asarray(Image.open(tmp_path / "msk" / f"a{i}.png")))
    assert masks[0].ndim == 2 and masks[0].max() == 1
    opts = dict(base=4, depth=2, tile=32, steps=2, threads=1, val_split=0)
    run_unet("train", "--images", tmp_path / "rgb", "--masks", tmp_path / "msk", "--out",
             tmp_path / "cli" / "m.safetensors", "--base", 4, "--depth", 2, "--tile", 32,
             "--steps", 2, "--threads", 1, "--val-split", 0, "--channels", "gray",
             "--channel-axis", "last", "--quiet")
    names = ["m.safetensors", "m.last.safetensors", "m.resume.safetensors"]
    cli = [(tmp_path / "cli" / n).read_bytes() for n in names]
    for kind, x, y in (("f", tmp_path / "rgb", tmp_path / "msk"), ("a", images, masks)):
        m = unet_mod.train(x, y, tmp_path / kind / "m.safetensors", channels="gray",
                           channel_axis="last", **opts)
        assert m.input == {"channel_axis": "last", "channels": "gray"} and m.in_channels == 1
        assert [(tmp_path / kind / n).read_bytes() for n in names] == cli, kind
    # Resumed: the record applies; another layout is refused.
    resume = tmp_path / "a" / "m.resume.safetensors"
    m = unet_mod.train(images, masks, tmp_path / "a" / "m.safetensors", resume=resume,
                       **dict(opts, steps=3))
    assert m.input["channels"] == "gray"
    with pytest.raises(ValueError, match="a resumed run reads its data the same way"):
        unet_mod.train(images, masks, tmp_path / "a" / "m.safetensors", resume=resume,
                       channels="0", **dict(opts, steps=4))
