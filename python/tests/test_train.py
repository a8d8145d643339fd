"""unet.train against `unet train`: the same losses and files bit for bit from arrays and from
folders, events through the callback, a clean stop and a resume, the GIL, and the errors."""
import os
import re
import signal
import threading
import warnings

import numpy as np
import pytest

from conftest import run_unet, ticks_during, ROOT

TRAIN = os.path.join(ROOT, "data", "sample", "train")
# Small and quick: base 4 on tiles of 64, 2 a batch, one thread (results depend on the count).
OPTS = dict(base=4, depth=3, tile=64, batch=2, steps=6, seed=3, threads=1, ema=0.9)
CLI = ["--base", 4, "--depth", 3, "--tile", 64, "--batch", 2, "--steps", 6, "--seed", 3,
       "--threads", 1, "--ema", 0.9, "--quiet"]
FILES = ["m.safetensors", "m.last.safetensors", "m.resume.safetensors"]


def _rows(path):
    """The log's lines without the seconds column (the tenth)."""
    with open(path, encoding="utf-8") as f:
        return [",".join(c for i, c in enumerate(line.rstrip("\n").split(",")) if i != 9)
                for line in f]


def _same_files(a, b):
    for name in FILES:
        with open(os.path.join(a, name), "rb") as f, open(os.path.join(b, name), "rb") as g:
            assert f.read() == g.read(), name


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """unet train on data/sample/train: its folder (log and the three model files)."""
    d = tmp_path_factory.mktemp("cli")
    run_unet("train", "--images", os.path.join(TRAIN, "images"), "--masks",
             os.path.join(TRAIN, "masks"), "--out", d / "m.safetensors", *CLI)
    return d


def _arrays(unet_mod):
    names = sorted(os.listdir(os.path.join(TRAIN, "images")))
    images = [unet_mod.imread(os.path.join(TRAIN, "images", n)) for n in names]
    masks = [unet_mod.imread(os.path.join(TRAIN, "masks", n)) for n in names]
    return images, masks


def test_arrays_and_folders_equal_cli_bit_for_bit(unet_mod, cli_run, tmp_path):
    images, masks = _arrays(unet_mod)
    events = []
    m = unet_mod.train(images, masks, tmp_path / "a" / "m.safetensors",
                       log=tmp_path / "a" / "m.log.csv", callback=events.append, **OPTS)
    assert _rows(tmp_path / "a" / "m.log.csv") == _rows(cli_run / "m.log.csv")
    _same_files(tmp_path / "a", cli_run)
    info = m.training
    assert info["status"] == "done" and info["step"] == 6 and info["n_val"] == 1
    assert info["selected"].startswith("best val_dice=") and info["selected"].endswith("ema=0.9")
    # Every step is an event, the epoch end (the run's last step) has the validation.
    kinds = [e["kind"] for e in events]
    assert kinds == ["start"] + ["step"] * 6 + ["epoch"]
    assert [e["step"] for e in events if e["kind"] == "step"] == list(range(1, 7))
    end = events[-1]
    assert 0 <= end["val_dice"] <= 1 and end["row"].startswith("6,1,")
    # The model returned is the one validated (the moving average), as OUT holds it.
    assert m.tensors() == unet_mod.load(tmp_path / "a" / "m.safetensors").tensors()
    img = images[0][:128, :128]
    assert np.array_equal(m.predict(img), unet_mod.load(cli_run / "m.safetensors").predict(img))
    # Folders: the same files as unet train lists them.
    unet_mod.train(os.path.join(TRAIN, "images"), os.path.join(TRAIN, "masks"),
                   tmp_path / "f" / "m.safetensors", log=tmp_path / "f" / "m.log.csv", **OPTS)
    assert _rows(tmp_path / "f" / "m.log.csv") == _rows(cli_run / "m.log.csv")
    _same_files(tmp_path / "f", cli_run)


@pytest.fixture(scope="module")
def instance_masks(unet_mod, tmp_path_factory):
    """data/sample/train's masks as instance label images (each cell pixel of the left half id
    7, of the right half id 300: two ids, as the Cell Tracking Challenge's masks give every
    cell its own), also written as .npy files into a folder: (folder, arrays)."""
    d = tmp_path_factory.mktemp("instances")
    _, masks = _arrays(unet_mod)
    arrays = []
    for name, m in zip(sorted(os.listdir(os.path.join(TRAIN, "masks"))), masks):
        ids = np.where(np.arange(m.shape[1]) < m.shape[1] // 2, 7, 300).astype(np.uint16)
        arrays.append(np.where(m > 0, ids, 0).astype(np.uint16))
        np.save(d / (os.path.splitext(name)[0] + ".npy"), arrays[-1])
    return d, arrays


def test_instance_masks_plan_the_recipe_as_cli(unet_mod, instance_masks, tmp_path):
    """With no loss, recipe or separate_cells, instance masks train with separated cells and the
    weighted loss, as `unet train` chooses from the same masks (the library's
    unet_plan_from_masks): the same warning, log rows and files, from arrays and folders;
    loss="ce+dice" trains without, as `unet train --loss ce+dice` does."""
    folder, inst = instance_masks
    images, _ = _arrays(unet_mod)
    note = unet_mod._core.PLAN_SEPARATE_NOTE
    assert note.startswith("the masks label each cell with its own id and many cells touch: "
                           "training with --separate-cells --loss wce")
    runs = {}
    for key, extra in (("planned", []), ("ce+dice", ["--loss", "ce+dice"])):
        d = tmp_path / ("cli-" + key)
        r = run_unet("train", "--images", os.path.join(TRAIN, "images"), "--masks", folder,
                     "--out", d / "m.safetensors", *CLI, *extra)
        assert (note in r.stderr) == (key == "planned"), r.stderr
        runs[key] = d
    assert _rows(runs["planned"] / "m.log.csv") != _rows(runs["ce+dice"] / "m.log.csv")
    for name, masks in (("a", inst), ("f", folder)):
        with pytest.warns(UserWarning, match=re.escape(note)):
            unet_mod.train(images if name == "a" else os.path.join(TRAIN, "images"), masks,
                           tmp_path / name / "m.safetensors", log=tmp_path / name / "m.log.csv",
                           **OPTS)
        assert _rows(tmp_path / name / "m.log.csv") == _rows(runs["planned"] / "m.log.csv")
        _same_files(tmp_path / name, runs["planned"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no note
        unet_mod.train(images, inst, tmp_path / "c" / "m.safetensors",
                       log=tmp_path / "c" / "m.log.csv", loss="ce+dice", **OPTS)
    assert _rows(tmp_path / "c" / "m.log.csv") == _rows(runs["ce+dice"] / "m.log.csv")
    _same_files(tmp_path / "c", runs["ce+dice"])


def test_callback_stops_then_resume_continues(unet_mod, cli_run, tmp_path):
    images, masks = _arrays(unet_mod)
    out, log = tmp_path / "m.safetensors", tmp_path / "m.log.csv"
    m = unet_mod.train(images, masks, out, log=log,
                       callback=lambda e: e["kind"] == "step" and e["step"] == 4, **OPTS)
    assert m.training["status"] == "stopped"
    assert m.training["step"] == 4 and m.training["saved_step"] == 4
    assert len(_rows(log)) == 1 + 4
    resumed = dict(OPTS, seed=99, batch=3)   # the checkpoint's seed and batch win
    m = unet_mod.train(images, masks, out, log=log, resume=tmp_path / "m.resume.safetensors",
                       **resumed)
    assert m.training["first_step"] == 4 and m.training["step"] == 6
    assert _rows(log) == _rows(cli_run / "m.log.csv")
    _same_files(tmp_path, cli_run)


def test_gil_is_released_during_training(unet_mod):
    rng = np.random.default_rng(0)
    images = [rng.random((192, 192), dtype=np.float32) for _ in range(2)]
    masks = [(x > 0.5).astype(np.uint8) for x in images]
    seen = []

    def work():
        unet_mod.train(images, masks, base=8, depth=3, tile=128, batch=2, steps=3, threads=1,
                       val_split=0, callback=lambda e: seen.append(threading.get_ident()))
        seen.append(("worker", threading.get_ident()))

    d, inside = ticks_during(work)
    assert d > 0.05 and inside > 10, (d, inside)
    worker = seen[-1][1]
    assert seen[:-1] == [worker] * (1 + 3 + 1)  # start, 3 steps, epoch end: on train's thread


def test_errors(unet_mod, tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.random((64, 64), dtype=np.float32) for _ in range(3)]
    masks = [(x > 0.5).astype(np.uint8) for x in images]
    quick = dict(base=2, depth=2, tile=32, steps=1, val_split=0)
    with pytest.raises(ValueError, match="3 images but 2 masks"):
        unet_mod.train(images, masks[:2], **quick)
    with pytest.raises(TypeError, match=r"images\[1\]: dtype complex64 is not an image type"):
        unet_mod.train([images[0], images[1].astype(np.complex64)], masks[:2], **quick)
    bad = [x.copy() for x in images]
    bad[2][5, 7] = np.nan
    with pytest.raises(unet_mod.ArgumentError,
                       match=r"images\[2\]: non-finite value nan at channel 0, pixel \(y 5, x 7\)"):
        unet_mod.train(bad, masks, **quick)
    with pytest.raises(ValueError, match=r"images\[0\]: the mask has shape \(63, 64\)"):
        unet_mod.train(images[:1], [masks[0][1:]], **quick)
    with pytest.raises(unet_mod.FormatError, match="mask value 7 at"):
        unet_mod.train(images[:1], [masks[0] * 7], classes=3, **quick)
    # Bad options: the C library's message names the option.
    for kw, text in [(dict(batch=-1), "batch: expected"), (dict(ema=1.5), "ema: "),
                     (dict(loss="bce"), "loss: 'bce'"), (dict(schedule="linear"), "schedule: "),
                     (dict(lr=-1.0), "lr: "), (dict(minutes=-1.0), "minutes: "),
                     (dict(loss="dice", loss_reduction="sum"), "loss reduction sum"),
                     (dict(precision="fp16"), "precision: expected fp32 or bf16, got 'fp16'")]:
        with pytest.raises(unet_mod.ArgumentError, match=text):
            unet_mod.train(images, masks, **dict(quick, **kw))
    with pytest.raises(TypeError, match="unexpected keyword"):
        unet_mod.train(images, masks, no_such_option=1, **quick)
    with pytest.raises(ValueError, match="recipe"):
        unet_mod.train(images, masks, recipe="fast", **quick)
    # An exception in the callback stops the run after its step and is raised.
    seen = []

    def boom(e):
        seen.append(e["step"])
        if e["kind"] == "step":
            raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        unet_mod.train(images, masks, tmp_path / "m.safetensors", **dict(quick, steps=5),
                       callback=boom)
    assert seen == [0, 1]
    assert os.path.exists(tmp_path / "m.resume.safetensors")
    # Ctrl-C: the step in flight is finished and saved, then KeyboardInterrupt.
    def ctrl_c(e):
        if e["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    # Python's own handler, even when the tests were started with SIGINT ignored (a shell's
    # background job: `nohup make test &`), where Python installs none.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            unet_mod.train(images, masks, tmp_path / "c.safetensors", **dict(quick, steps=5),
                           callback=ctrl_c)
    finally:
        signal.signal(signal.SIGINT, previous)
    m = unet_mod.train(images, masks, tmp_path / "c.safetensors", **dict(quick, steps=5),
                       resume=tmp_path / "c.resume.safetensors")
    assert m.training["first_step"] == 2 and m.training["step"] == 5
    # A file unet did not write is not replaced without force.
    (tmp_path / "mine.safetensors").write_text("my notes")
    with pytest.raises(FileExistsError, match="force=True"):
        unet_mod.train(images, masks, tmp_path / "mine.safetensors", **quick)
    assert (tmp_path / "mine.safetensors").read_text() == "my notes"


def test_holdout_plan_as_unet_train(unet_mod):
    """The plan unet.train and unet train apply: bands of 1-3 images, whole images otherwise,
    the last pages of one stack."""
    p = unet_mod.holdout_plan([96, 96], val_split=0.2)
    assert p["kind"] == "bands" and p["band_rows"] == [19, 19] and p["held"] == []
    assert unet_mod.holdout_plan([40, 40], val_split=0.1)["kind"] == "none"
    p = unet_mod.holdout_plan([48] * 6, val_split=0.1, files=[0] * 6)
    assert p["kind"] == "images" and p["held"] == [5]
    p = unet_mod.holdout_plan([512] * 8, val_split=0.1, seed=3)
    assert p["kind"] == "images" and len(p["held"]) == 1
    with pytest.raises(unet_mod.ArgumentError, match="fraction"):
        unet_mod.holdout_plan([10], val_split=1.5)


def test_time_budget_plans_as_cli(unet_mod):
    """With a time budget and base, batch, epochs and tile left out, the run is planned as unet
    train plans it (the library's unet_plan_run): base 16, batch 8, no end but the budget, the
    tile from the images' largest side (120 -> 128); given values are kept."""
    images, masks = _arrays(unet_mod)
    images = [i[:100, :120] for i in images[:4]]
    masks = [m[:100, :120] for m in masks[:4]]
    m = unet_mod.train(images, masks, minutes=0.005, val_split=0, threads=1)
    t = m.training
    assert m.info()["base"] == 16
    assert t["tile"] == 128 and t["total"] == 2 ** 40 and t["budget_over"]
    assert t["per_epoch"] == 1   # 4 x 100 x 120 pixels in batches of 8 tiles of 128 x 128
    m = unet_mod.train(images, masks, minutes=0.005, val_split=0, threads=1, base=4, batch=4,
                       steps=2, tile=64)
    t = m.training
    assert m.info()["base"] == 4 and t["tile"] == 64 and t["total"] == 2
    with pytest.raises(unet_mod.ArgumentError, match="schedule cosine decays over the run"):
        unet_mod.train(images, masks, minutes=0.005, val_split=0, schedule="cosine")
