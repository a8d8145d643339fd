"""unet: U-Net and FCN image segmentation (the C library include/unet.h) from Python.

    import unet
    m = unet.load("model.safetensors")
    labels = m.predict(image)                      # class id per pixel, uint8 (H, W)
    labels, prob = m.predict(image, probabilities=True)
    print(unet.evaluate(labels, truth)["mean_dice"])
    m = unet.train(images, masks, out="model.safetensors", steps=2000)   # lists or folders

Images are numpy arrays of any integer or float dtype: (H, W), or 3-D with the channels where
unet's rule puts them for a .npy file (last when the last axis is <= 4 and both others larger,
else first; channel_axis= says otherwise, "none" makes (N, H, W) a stack), or a stack
(N, ...) of them.  channels= chooses or converts channels ("gray", "0", "1,2") as
`unet predict --channels`; a model trained with --channel-axis or --channels applies its own
unless told otherwise (docs/images.md).  They are normalised exactly as
`unet predict` normalises image files (8-bit / 255, 16-bit by the 1 and 99.8 percentiles per
image and channel, float and other integers as they are), so a prediction from Python equals
the command line's bit for bit.  Computation releases the GIL.  Errors of the C library raise
unet.Error subclasses carrying its message (docs/python.md).
"""
import os
import stat
import warnings

import numpy as np

from . import _core
from ._core import (  # noqa: F401  (the exception classes are part of the API)
    ArgumentError,
    Error,
    FileError,
    FormatError,
    NoMemoryError,
    NumericError,
    ShapeError,
    StoppedError,
)

__version__ = _core.version
__all__ = ["load", "create", "train", "holdout_plan", "evaluate", "imread", "image_pages",
           "Model", "Error",
           "ArgumentError", "FileError", "FormatError", "NoMemoryError", "NumericError",
           "ShapeError", "StoppedError"]

# unet_dtype codes (include/unet.h)
_U8, _U16, _I32, _F32 = 1, 2, 3, 4
_NORMS = {"auto": 0, "percentile": 1, "max": 2, "none": 3}
_LOGITS, _PROBABILITIES = 1, 0  # unet_output
_AXIS_AUTO, _AXIS_NONE = -100, -101  # UNET_CHANNEL_AXIS_AUTO, _NONE
_AXIS_NAMES = {"auto": _AXIS_AUTO, "none": _AXIS_NONE, "first": 0, "last": -1}


def _axis_code(channel_axis):
    """channel_axis (None, "auto", "none", "first", "last" or an int) as unet's code."""
    if channel_axis is None:
        return _AXIS_AUTO
    if isinstance(channel_axis, str):
        if channel_axis not in _AXIS_NAMES:
            raise ValueError(f"channel_axis: expected one of {', '.join(_AXIS_NAMES)} or an "
                             f"axis, got {channel_axis!r}")
        return _AXIS_NAMES[channel_axis]
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis,
                                                                   (int, np.integer)):
        raise TypeError(f"channel_axis: expected a name or an int, got {channel_axis!r}")
    return int(channel_axis)


def _channels_spec(channels):
    """channels ("gray", "all", "0", "1,2", or a sequence of ints) as unet's spec, None for
    all."""
    if channels is None or (isinstance(channels, str) and channels == "all"):
        return None
    if isinstance(channels, str):
        return channels
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        return str(int(channels))
    return ",".join(str(int(c)) for c in channels)


def _check_file(path, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"{what} not found", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"{what} is a directory, not a file", path)
    return path


def load(path):
    """Loads a safetensors checkpoint (unet's, or PyTorch's with milesial/pytorch-fcn names)."""
    return Model(_core.load(_check_file(path, "model")))


def create(arch="unet", *, in_channels=None, classes=None, base=None, depth=None,
           bilinear=None, conv_bias=None, batchnorm=None, padding=None, dropout=None,
           fc_channels=None, learn_final_up=None, seed=0):
    """A model with freshly initialised parameters (deterministic for a seed).

    arch is "unet", "unet-paper", "fcn32s", "fcn16s" or "fcn8s"; options left as None keep the
    architecture's defaults (unet_config_default: the seed U-Net is base 64, depth 4).
    """
    def opt(v):
        return -1 if v is None else int(v)

    return Model(_core.create(str(arch), opt(in_channels), opt(classes), opt(base), opt(depth),
                              opt(bilinear), opt(conv_bias), opt(batchnorm), opt(padding),
                              float("nan") if dropout is None else float(dropout),
                              opt(fc_channels), opt(learn_final_up), int(seed)))


def _as_unet_dtype(a, what):
    """a as an array of a unet_dtype, converted the way unet's .npy loader converts a file of
    that dtype (src/io/npy.c), and its code.  float32 C-contiguous arrays come back as they
    are (no copy)."""
    k, size = a.dtype.kind, a.dtype.itemsize
    if k == "f":
        if size == 4:
            return np.ascontiguousarray(a, dtype=np.float32), _F32
        if size > 4:
            big = np.isfinite(a) & (np.abs(a) > np.finfo(np.float32).max)
            if big.any():
                i = np.unravel_index(np.argmax(big), a.shape)
                raise ValueError(f"{what}: value {a[i]} at {tuple(int(v) for v in i)} is outside "
                                 "the float32 range")
        return np.ascontiguousarray(a, dtype=np.float32), _F32
    if k == "b" or (k == "u" and size == 1):
        return np.ascontiguousarray(a, dtype=np.uint8), _U8
    if k == "u" and size == 2:
        return np.ascontiguousarray(a, dtype=np.uint16), _U16
    if k in "iu":
        if a.size and (size > 4 or (k == "u" and size == 4)):
            i32 = np.iinfo(np.int32)
            lo, hi = int(a.min()), int(a.max())
            if lo < i32.min or hi > i32.max:
                raise ValueError(f"{what}: value {lo if lo < i32.min else hi} does not fit in "
                                 f"int32 (unet reads {a.dtype} images as int32)")
        return np.ascontiguousarray(a, dtype=np.int32), _I32
    raise TypeError(f"{what}: dtype {a.dtype} is not an image type (use integers or floats)")


class Model:
    """A segmentation network: unet.load(path) or unet.create(arch)."""

    def __init__(self, core):
        self._m = core

    def info(self, size=None):
        """The architecture as a dict (arch, in_channels, classes, base, depth, up, padding,
        batchnorm, conv_bias, dropout, init, fc_channels, learn_final_up, parameters).

        size=(h, w) adds input (the next valid size), output, flops and activation_bytes of one
        forward pass at that size, as `unet info --size` prints them."""
        d = self._m.config()
        d["tensors"] = len(self._m.tensors())
        if size is not None:
            h, w = (size, size) if np.isscalar(size) else size
            h, w = self._m.round_size(int(h)), self._m.round_size(int(w))
            d["input"] = (h, w)
            d["output"] = self._m.output_size(h, w)
            d["flops"], d["activation_bytes"] = self._m.cost(h, w)
        return d

    def tensors(self):
        """The checkpoint's tensors: [(name, shape, trainable)], PyTorch state_dict order."""
        return self._m.tensors()

    @property
    def cache(self):
        """The inference cache of transformed weights (as `unet predict --cache`): True (the
        default) keeps them from the second prediction on, about 1.1x faster, at cache_bytes of
        memory (about 4x the 3x3 convolutions' weights); False frees it.  Same results."""
        return self._m.cache()

    @cache.setter
    def cache(self, on):
        self._m.set_cache(bool(on))

    @property
    def cache_bytes(self):
        """The memory the inference cache takes once made, at the current precision."""
        return self._m.cache_bytes()

    @property
    def classes(self):
        return self._m.config()["classes"]

    @property
    def in_channels(self):
        return self._m.config()["in_channels"]

    @property
    def input(self):
        """The input layout the model was trained on (unet train --channel-axis, --channels):
        {"channel_axis": "first", "last", "none", an int or None, "channels": "gray", "0,1"... or
        None}; predict applies it unless told otherwise."""
        axis, channels = self._m.input()
        names = {v: k for k, v in _AXIS_NAMES.items()}
        return {"channel_axis": None if axis == _AXIS_AUTO else names.get(axis, axis),
                "channels": channels}

    def output_size(self, h, w):
        """(out_h, out_w) of one forward pass on an h x w input."""
        return self._m.output_size(int(h), int(w))

    def save(self, path):
        """Writes the model as a safetensors checkpoint (atomically)."""
        self._m.save(os.fspath(path))

    def export_onnx(self, path, probabilities=False):
        """Writes the model as ONNX (docs/export.md): output logits, or softmax probabilities."""
        self._m.export_onnx(os.fspath(path), bool(probabilities))

    def forward(self, x, threads=None):
        """Logits (N, classes, out_h, out_w) of one forward pass over a float32 batch
        (N, in_channels, H, W) as it is: no normalisation, no tiles."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise TypeError(f"forward: expected float32, got {x.dtype} (predict converts images)")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"forward: expected (N, {self.in_channels}, H, W), got {x.shape}")
        x = np.ascontiguousarray(x)
        n, _, h, w = x.shape
        oh, ow = self._m.output_size(h, w)
        out = np.empty((n, self.classes, oh, ow), np.float32)
        self._m.forward(x, n, h, w, out, _threads(threads))
        return out

    def _planar(self, image, channel_axis):
        """image as planar (N, C, H, W) (a view where possible) and whether it was a stack.
        One image is 2-D or 3-D, read by unet's channel rule (unet_channel_axis_of) as a .npy
        file is; a stack is 4-D, or 3-D with channel_axis "none"."""
        a = np.asarray(image)
        if a.dtype == object or a.ndim < 2 or a.ndim > 4:
            raise ValueError(f"image: expected a 2-D image, a 3-D one with channels or a stack, "
                             f"got shape {a.shape} of {a.dtype}")
        named = channel_axis is None or isinstance(channel_axis, str)
        code = self._m.input()[0] if channel_axis is None else _axis_code(channel_axis)
        if a.ndim == 2:
            return a[None, None], False
        if a.ndim == 3:
            if code == _AXIS_NONE:
                return a[:, None], True
            ax = _core.channel_axis(tuple(int(d) for d in a.shape), code)
            return np.moveaxis(a, ax, 0)[None], False
        # A stack (N, ...): names and the rule apply to each image's three axes, an int is an
        # axis of the 4-D array.
        if code == _AXIS_NONE:
            raise ValueError(f"image: shape {a.shape}: channel_axis 'none' takes a stack "
                             "(N, H, W) of one-channel images, not a 4-D array")
        if named:
            ax = 1 + _core.channel_axis(tuple(int(d) for d in a.shape[1:]), code)
        else:
            ax = code % 4 if -4 <= code < 4 else 0
            if ax == 0:
                raise ValueError(f"image: channel_axis {code} of a 4-D stack is the stack axis")
        return np.moveaxis(a, ax, 1), True

    def predict(self, image, *, tile=0, overlap=None, tta=False, batch=1, threads=None,
                probabilities=False, instances=False, logits=False, grow=2, norm="auto",
                channel_axis=None, channels=None, precision="fp32"):
        """Segments an image of any size with overlapping tiles (as `unet predict`).

        image: (H, W), a 3-D image whose channel axis unet's rule finds (last when the last
            axis is <= 4 and both others larger, else first), or a stack (N, ...); any integer
            or float dtype, normalised as `unet predict --norm` does (norm: "auto",
            "percentile", "max", "none").  channel_axis: "first", "last", "none" (a 3-D array
            is a stack (N, H, W)) or an int, as `unet predict --channel-axis`; channels:
            "gray", "0", "1,2" or a list of ints, as `--channels`.  Both default to the
            model's record (Model.input), else the rule and every channel.
        tile, overlap, tta, batch, precision: as `unet predict --tile --overlap --tta --batch
        --precision` ("fp32" or "bf16": bf16 products where the CPU has AVX512_BF16, fp32
        elsewhere; docs/performance.md); threads: OpenMP threads (None: all cores).
        Returns the class ids (H, W) uint8; with probabilities, instances or logits, a tuple
        (classes, then in this order those asked for: probabilities (K, H, W) float32,
        instances (H, W) int32 labels 1..n (as `unet predict --instances`: the seeded watershed
        with its defaults, grown over `grow` pixels as --grow), logits
        (K, H, W) float32).  A stack gives each with a leading N.
        """
        if norm not in _NORMS:
            raise ValueError(f"norm: expected one of {', '.join(_NORMS)}, got {norm!r}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
        self._m.set_precision(precision)
        if logits and tta:
            raise ValueError("logits: not available with tta (the 8 predictions are averaged "
                             "as probabilities)")
        for name, v, lo in (("tile", tile, 0), ("batch", batch, 1), ("grow", grow, 0)):
            if int(v) < lo:
                raise ValueError(f"{name}: expected >= {lo}, got {v}")
        if overlap is not None and int(overlap) < 0:
            raise ValueError(f"overlap: expected >= 0, got {overlap}")
        planes, stack = self._planar(image, channel_axis)
        spec = self._m.input()[1] if channels is None else _channels_spec(channels)
        n, c, h, w = planes.shape
        C = self.in_channels
        if spec is not None:
            c = _core.channels_count(spec, c, "image")
        if c != C:
            raise ValueError(f"image: shape {np.shape(image)} has {c} channel"
                             f"{'' if c == 1 else 's'}; the model takes {C}"
                             + _channels_hint(spec, c, C, np.ndim(image), planes.shape[1]))
        K = self.classes
        kind = _LOGITS if logits else _PROBABILITIES  # unet predict: --logits without --tta
        labels = np.empty((n, h, w), np.uint8)
        out = np.empty((n, K, h, w), np.float32)
        inst = np.empty((n, h, w), np.int32) if instances else None
        logit_copy = np.empty((n, K, h, w), np.float32) if logits and probabilities else None
        args = (_NORMS[norm], int(tile), -1 if overlap is None else int(overlap), int(bool(tta)),
                int(batch), _threads(threads))
        for i in range(n):
            what = "image" if n == 1 else f"image {i}"
            x, code = _as_unet_dtype(planes[i], what)
            if spec is not None:
                data, _ = _core.select_channels(x, code, x.shape[0], h, w, spec, what)
                x = np.frombuffer(data, dtype=x.dtype).reshape(c, h, w)
            self._m.predict(x, code, c, h, w, args[0], out[i], kind, labels[i],
                            None if inst is None else inst[i], int(grow), *args[1:])
            if logit_copy is not None:
                logit_copy[i] = out[i]
                _core.probabilities(out[i], K, h, w)
        res = [labels]
        if probabilities:
            res.append(out)
        if instances:
            res.append(inst)
        if logits:
            res.append(logit_copy if logit_copy is not None else out)
        if not stack:
            res = [r[0] for r in res]
        return res[0] if len(res) == 1 else tuple(res)


def _channels_hint(spec, c, want, ndim, stored):
    """What would make an image of c channels (stored before channels=) fit a model of want,
    as `unet predict` hints."""
    if spec is not None:
        return f" (after channels={spec!r})"
    hints = []
    if want == 1 and ndim == 3:
        hints.append("channel_axis='none' reads (N, H, W) as a stack")
    if want == 1 and stored == 3:
        hints.append("channels='gray' converts RGB to its luminance")
    if want < c:
        hints.append(f"channels= chooses {want} of them")
    if not hints:
        hints.append("channel_axis= says where the channels are")
    return ": " + "; ".join(hints)


def _threads(threads):
    if threads is None:
        return 0
    t = int(threads)
    if not 1 <= t <= 1024:
        raise ValueError(f"threads: expected 1..1024, got {threads}")
    return t


def _label_image(a, what, shape=None):
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected one image (H, W), got shape {a.shape} (evaluate "
                         "scores one image; loop over a stack)")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{what}: shape {a.shape} differs from pred's {shape}")
    if a.dtype.kind not in "iub":
        raise TypeError(f"{what}: expected integer labels, got {a.dtype}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{what}: labels do not fit in int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def evaluate(pred, truth, *, classes=None, pred_instances=None, truth_instances=None):
    """Scores a predicted class map against the truth (both (H, W) class ids) as `unet eval`:
    a dict with pixel_error, iou and dice (per class), mean_iou, mean_dice, rand_error (ISBI
    2012), seg (Cell Tracking Challenge), ap50, n_true, n_pred (NaN where undefined).

    classes: default max(2, largest id + 1).  Instances (label images, 0 = background) default
    to the connected components of the foreground (unet_evaluate)."""
    p = _label_image(pred, "pred")
    t = _label_image(truth, "truth", p.shape)
    pi = None if pred_instances is None else _label_image(pred_instances, "pred_instances", p.shape)
    ti = None if truth_instances is None else _label_image(truth_instances, "truth_instances",
                                                            p.shape)
    if classes is None:
        classes = max(2, int(max(p.max(initial=0), t.max(initial=0))) + 1)
    h, w = p.shape
    return _core.evaluate(p, t, pi, ti, h, w, int(classes))


def imread(path, page=0, channel_axis=None, palette_indices=False):
    """An image file (PNG, TIFF page, .npy) as unet reads it: the stored samples, (H, W) for
    one channel, else (H, W, C); dtype uint8, uint16, int32 or float32.  channel_axis as
    `unet predict --channel-axis` (None: unet's rule); palette_indices: a palette PNG's
    indices instead of its colours (as masks are read)."""
    data, code, c, h, w = _core.imread(_check_file(path, "image"), int(page),
                                       _axis_code(channel_axis), bool(palette_indices))
    dtype = {_U8: np.uint8, _U16: np.uint16, _I32: np.int32, _F32: np.float32}[code]
    a = np.frombuffer(data, dtype=dtype).reshape(c, h, w)
    return a[0] if c == 1 else np.moveaxis(a, 0, -1)


def image_pages(path, channel_axis=None):
    """The number of images in a file (TIFF pages; 1 for PNG and .npy) under channel_axis
    ("none": a 3-D .npy's first axis; "first": a TIFF's pages are channels, so 1)."""
    return _core.image_pages(_check_file(path, "image"), _axis_code(channel_axis))


# ---- training (docs/python.md, "Training") -------------------------------------------------

_IMAGE_EXTS = (".png", ".tif", ".tiff", ".npy")
# unet train --recipe paper-sgd's learning rate (src/cli/cmd_train.c, PAPER_SGD_LR_TEXT).
_PAPER_SGD_LR = 1e-7


def _list_images(path):
    """The image files of a folder as `unet train` lists them (.png .tif .tiff .npy in any case,
    regular files, sorted by name as bytes), or the file itself."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "not found", path)
    if not os.path.isdir(path):
        return [path]
    names = sorted((n for n in os.listdir(path) if not n.startswith(".") and
                    os.path.splitext(n)[1].lower() in _IMAGE_EXTS), key=os.fsencode)
    files = [os.path.join(path, n) for n in names]
    files = [f for f in files if stat.S_ISREG(os.stat(f).st_mode)]
    if not files:
        raise FileNotFoundError(2, "no images (.png, .tif, .tiff, .npy) in this directory", path)
    return files


def _find_mask(masks, image):
    """The mask of an image file in the folder masks as `unet train` finds it
    (src/cli/cli.c, cli_find_mask): the same name, or the same stem with an image extension; two
    such masks, or a mask whose full name is another image's beside this one, are an error."""
    base = os.path.basename(image)
    p = os.path.join(masks, base)
    if os.access(p, os.R_OK):
        return p
    stem = os.path.splitext(base)[0] if not base.startswith(".") else base
    found = []
    for ext in (".png", ".tif", ".tiff", ".npy", ".PNG", ".TIF", ".TIFF", ".NPY"):
        p = os.path.join(masks, stem + ext)
        if os.access(p, os.R_OK) and not any(os.path.samefile(p, f) for f in found):
            found.append(p)
    if not found:
        raise FileNotFoundError(2, f"{image}: no mask with the same name in this folder", masks)
    if len(found) > 1:
        raise ValueError(f"{image}: several masks in {masks} have its name "
                         f"({os.path.basename(found[0])}, {os.path.basename(found[1])}): which "
                         "one is its mask is ambiguous; rename them")
    sibling = os.path.join(os.path.dirname(image), os.path.basename(found[0]))
    if sibling != image and os.path.exists(sibling):
        raise ValueError(f"{image} and {sibling} have the same name: the mask {found[0]} is "
                         f"{sibling}'s (the same file name); give each image a mask of its own "
                         "name")
    return found[0]


def _is_path(x):
    return isinstance(x, (str, bytes, os.PathLike))


class _Loader:
    """Training images into a _core.Dataset, from files or arrays, with the file each came from
    (for the held-back set); axis and spec: the layout (unet's channel_axis code, a channels
    spec or None), as unet train --channel-axis --channels."""

    def __init__(self, target, norm, axis, spec, channels):
        self.target, self.norm, self.axis, self.spec = target, norm, axis, spec
        self.channels, self.ds, self.files, self.nfile = channels, None, [], 0

    def _dataset(self, c):
        if self.ds is None:
            self.channels = self.channels or c
            self.ds = _core.dataset(self.channels)
        return self.ds

    def folder(self, images, masks):
        for ip in _list_images(images):
            mp = _find_mask(os.fspath(masks), ip) if os.path.isdir(masks) else os.fspath(masks)
            pages, mpages = (_core.image_pages(_check_file(f, "image"), self.axis)
                             for f in (ip, mp))
            if pages != mpages:
                raise FormatError(f"{ip} has {pages} pages but its mask {mp} has {mpages}")
            base = os.path.basename(ip)
            for p in range(pages):
                if self.ds is None and not self.channels:
                    _, _, c, _, _ = _core.imread(_check_file(ip, "image"), p, self.axis, 0)
                    self._dataset(c if self.spec is None else
                                  _core.channels_count(self.spec, c, ip))
                self.ds.add_file(ip, mp, p, self.axis, self.spec, _NORMS[self.norm],
                                 self.target, f"{base}[{p}]" if pages > 1 else base)
                self.files.append(self.nfile)
            self.nfile += 1

    def arrays(self, images, masks, what):
        images, masks = list(images), list(masks)
        if len(images) != len(masks):
            raise ValueError(f"{what}: {len(images)} images but {len(masks)} masks")
        for i, (img, mask) in enumerate(zip(images, masks)):
            name = f"{what}[{i}]"
            a = np.asarray(img)
            if a.ndim == 2:
                a = a[None]
            elif a.ndim == 3 and self.axis != _AXIS_NONE:
                a = np.moveaxis(a, _core.channel_axis(tuple(int(d) for d in a.shape),
                                                      self.axis), 0)
            else:
                raise ValueError(f"{name}: expected (H, W) or a 3-D image with channels, got "
                                 f"shape {a.shape}")
            m = np.asarray(mask)
            if m.ndim != 2 or m.shape != a.shape[1:]:
                raise ValueError(f"{name}: the mask has shape {m.shape}, the image "
                                 f"{a.shape[1:]} (H, W)")
            x, code = _as_unet_dtype(a, name)
            mk, mcode = _as_unet_dtype(m, f"{name}'s mask")
            c, h, w = a.shape
            if self.spec is not None:
                data, c = _core.select_channels(x, code, c, h, w, self.spec, name)
                x = np.frombuffer(data, dtype=x.dtype)
            self._dataset(c).add_array(x, code, c, h, w, mk, mcode, _NORMS[self.norm],
                                       self.target, name)
            self.files.append(self.nfile)
            self.nfile += 1

    def load(self, images, masks, what):
        if _is_path(images) != _is_path(masks):
            raise TypeError(f"{what}: images and masks must both be folders (paths) or both "
                            "lists of arrays")
        if _is_path(images):
            self.folder(images, masks)
        else:
            self.arrays(images, masks, what)


def _train_layout(core, channel_axis, channels, resume):
    """The layout a training reads its data with: the options given, else the model's record
    (init, model or resume), else the rule and every channel; a resumed run must read its data
    as it began."""
    rec_axis, rec_spec = core.input() if core is not None else (_AXIS_AUTO, None)
    axis = rec_axis if channel_axis is None else _axis_code(channel_axis)
    spec = rec_spec if channels is None else _channels_spec(channels)
    if resume is not None and (axis, spec) != (rec_axis, rec_spec):
        raise ValueError(f"{os.fspath(resume)} was trained with channel_axis={rec_axis!r}, "
                         f"channels={rec_spec!r}; a resumed run reads its data the same way "
                         "(drop the options, or give these)")
    return axis, spec


def _plan_from_masks(masks, classes):
    """The default recipe's choice from the masks (unet_plan_from_masks, the rule unet train
    applies; docs/training.md "The default recipe"): True when classes is 2, the masks label
    each cell with its own id and at least 2 in 5 of the cells touch another.  masks: a folder or file (page 0 of each mask file), or a list of
    arrays; a mask the loading will refuse counts as not labelling cells (the loading names
    the problem)."""
    if _is_path(masks):
        try:
            files = _list_images(masks)
        except OSError:
            return False
        return _core.plan_from_masks(files, int(classes), True)
    planes = []
    for m in map(np.asarray, masks):
        if m.ndim != 2 or not m.size:
            continue
        try:
            mk, code = _as_unet_dtype(m, "mask")
        except (TypeError, ValueError):
            continue
        planes.append((mk, code, m.shape[0], m.shape[1]))
    return _core.plan_from_masks(planes, int(classes), False)


def _recipe(name, o):
    """unet train --recipe: fills what the recipe sets and the caller left as None
    (src/cli/cmd_train.c, apply_recipe)."""
    if name in (None, "seed"):
        return
    if name not in ("paper", "paper-sgd"):
        raise ValueError(f"recipe: {name!r} (expected seed, paper or paper-sgd)")
    sgd = name == "paper-sgd"
    for k, v in (("arch", "unet-paper"), ("augment", "paper"), ("loss", "wce"),
                 ("optimizer", "sgd" if sgd else "adam")):
        if o[k] is None:
            o[k] = v
    if o["lr"] is None and o["optimizer"] == "adam":
        o["lr"] = 5e-4
    if o["momentum"] is None and o["optimizer"] == "sgd":
        o["momentum"] = 0.99
    if sgd and o["loss_reduction"] is None:
        o["loss_reduction"] = "sum"
    if sgd and o["lr"] is None:
        o["lr"] = _PAPER_SGD_LR
    if o["batch"] is None:
        o["batch"] = 1
    o["separate_cells"] = True


def holdout_plan(rows, val_split=0.1, seed=1, files=None, min_rows=16):
    """Which images `unet train` (and unet.train) holds back for validation when no validation
    set is given (unet_holdout_plan, docs/training.md "The held-back set"): rows are the images'
    heights, files the file each image came from (pages of one stack share it; None: each its
    own).  Returns a dict: kind ("none", "images" or "bands"), held (the indices of the images
    held back whole), band_rows (per image, the bottom rows held back; 0: none)."""
    rows = [int(r) for r in rows]
    f = None if files is None else [int(x) for x in files]
    kind, held, band = _core.holdout_plan(rows, f, float(val_split), int(min_rows), int(seed))
    return {"kind": ("none", "images", "bands")[kind],
            "held": [i for i, h in enumerate(held) if h], "band_rows": band}


def _stem(out):
    out = os.fspath(out)
    return out[:-len(".safetensors")] if out.endswith(".safetensors") and \
        len(out) > len(".safetensors") else out


def _check_outputs(paths, log, force):
    """An existing output that unet did not write is kept unless force (as unet train's
    --force)."""
    for p in paths:
        if p and os.path.exists(p) and not force and not _core.probe(p):
            raise FileExistsError(17, "exists and is not a checkpoint unet wrote (force=True "
                                      "replaces it)", p)
    if log and os.path.exists(log) and not force:
        with open(log, "rb") as f:
            if f.readline().decode("utf-8", "replace") != _core.log_header():
                raise FileExistsError(17, "exists and is not a unet training log (force=True "
                                          "replaces it)", log)


def train(images, masks, out=None, *, val_images=None, val_masks=None, callback=None,
          model=None, init=None, resume=None, log=None, force=False, recipe=None,
          arch=None, base=None, depth=4, classes=2, bilinear=False, conv_bias=False,
          batchnorm=True, valid=False, dropout=None, epochs=None, steps=0, batch=None, tile=0,
          lr=None, optimizer=None, momentum=None, nesterov=False, weight_decay=None,
          schedule=None, warmup=0, milestones=None, clip=0.0, ema=0.0, loss=None,
          loss_reduction=None, w0=10.0, sigma=5.0, separate_cells=None, augment=None,
          norm="auto", seed=1, threads=None, val_split=0.1, minutes=0.0, max_rollbacks=3,
          rollback_lr=0.5, snapshot_every=100, guard=True, save_every=0, save_minutes=10.0,
          channel_axis=None, channels=None, precision="fp32"):
    """Trains a segmentation network as `unet train` does (docs/training.md, docs/python.md).

    images, masks: folders (or files) as `unet train --images --masks` reads them, or lists of
        numpy arrays: images (H, W) or 3-D with the channels where unet's rule finds them (last
        when the last axis is <= 4 and both others larger, else first) of any integer or float
        dtype (normalised as `norm` says), masks (H, W) of integers (0 background; >2 classes:
        class ids).
    channel_axis, channels: as `unet train --channel-axis --channels` (docs/images.md), for
        files and arrays; recorded with the model.  None: the model's record (init, model,
        resume), else the rule and every channel.
    out: the model file to write, the best by validation Dice (without validation the last),
        with STEM.last.safetensors and STEM.resume.safetensors beside it; None: no files.
    val_images, val_masks: the validation set (else val_split of the images is held back).
    callback: called with a dict per event (kind "start", "step" or "epoch"; step, epoch,
        total, loss, lr, grad_norm, elapsed, event, warning, row (the log's line), and at epoch
        ends with validation val_loss, val_dice, val_iou, val_pixel_error, val_rand_error);
        returning True stops the run cleanly after the step (the resumable checkpoint is
        written).  Ctrl-C does the same and raises KeyboardInterrupt.
    model: a unet.Model to train further (in place); init: a checkpoint to start from;
    resume: a STEM.resume.safetensors to continue (its seed, batch and tile).
    log: a CSV log to write (unet train's STEM.log.csv, byte for byte).
    The other options are unet train's, under Python names (no_batchnorm -> batchnorm=False,
    no_augment -> augment="none", no_guard -> guard=False); None keeps unet train's default.
    With neither recipe, loss nor separate_cells, classes=2 and masks that label each cell with
    its own id (two or more different non-zero values in one mask, as the Cell Tracking
    Challenge's masks do) and at least 2 in 5 of the cells touch another, the run separates
    touching cells and trains with loss="wce", with a warning, as unet train does
    (docs/training.md, "The default recipe"); loss="ce+dice" or recipe="seed" trains without.
    base, batch, epochs and tile left None (or 0) are planned as unet train plans them
    (unet_plan_run): with a time budget (minutes) base 16, batch 8 (2 with a given tile) and,
    with no steps or epochs, no end but the budget; else base 64, batch 4, 10 epochs; the tile
    of a U-Net with same-padded convolutions from the images' largest side (at most 128 with a
    budget, 256 without).
    Returns the trained model (the moving average's weights when ema is on); its .training is
    a dict of what the run did (steps, best, selected, per_epoch, ...).
    """
    o = dict(arch=arch, augment=augment, loss=loss, optimizer=optimizer, lr=lr,
             momentum=momentum, loss_reduction=loss_reduction, batch=batch,
             separate_cells=separate_cells)
    _recipe(recipe, o)
    if norm not in _NORMS:
        raise ValueError(f"norm: expected one of {', '.join(_NORMS)}, got {norm!r}")
    if (val_images is None) != (val_masks is None):
        raise ValueError("val_images and val_masks go together")
    if sum(x is not None for x in (model, init, resume)) > 1:
        raise ValueError("model, init and resume exclude each other")
    if not 0 <= val_split < 1:
        raise ValueError(f"val_split: expected 0 <= val_split < 1, got {val_split}")
    files = [None, None, None]
    if out is not None:
        stem = _stem(out)
        files = [os.fspath(out), stem + ".last.safetensors", stem + ".resume.safetensors"]
    log = os.fspath(log) if log is not None else None
    _check_outputs(files, log, force)
    for p in (files[0], log):
        if p:
            os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    if not _is_path(masks):
        masks = list(masks)   # read twice: planned from, then loaded
    if recipe is None and loss is None and separate_cells is None and \
            _plan_from_masks(masks, classes):
        o["loss"], o["separate_cells"] = "wce", True
        warnings.warn(_core.PLAN_SEPARATE_NOTE, stacklevel=2)
    opts = dict(loss=o["loss"], optimizer=o["optimizer"], augment=o["augment"],
                schedule=schedule, loss_reduction=o["loss_reduction"], milestones=milestones,
                lr=o["lr"], momentum=o["momentum"],
                weight_decay=weight_decay, nesterov=int(bool(nesterov)), clip=clip,
                warmup=warmup, max_rollbacks=max_rollbacks, rollback_lr=rollback_lr,
                guard=int(bool(guard)), ema=ema, batch=o["batch"], tile=tile, epochs=epochs,
                steps=steps, seed=seed, minutes=minutes, snapshot_every=snapshot_every,
                save_every=save_every, save_minutes=save_minutes, out=files[0],
                last=files[1], resume_out=files[2], precision=precision)
    opts["resume"], resumed_at = None, None
    if resume is not None:
        core = _core.load_training(_check_file(resume, "resume checkpoint"))
        opts["resume"] = os.fspath(resume)
        opts["seed"], opts["batch"], opts["tile"], resumed_at = core.resume_info(opts["resume"])
    elif init is not None:
        core = _core.load(_check_file(init, "init model"))
    else:
        core = model._m if model is not None else None
    if core is not None:
        classes = core.config()["classes"]
    target = (int(classes), int(bool(o["separate_cells"])), 1, int(o["loss"] == "wce"),
              float(w0), float(sigma))
    axis, spec = _train_layout(core, channel_axis, channels, resume)
    train_set = _Loader(target, norm, axis, spec,
                        core.config()["in_channels"] if core is not None else 0)
    train_set.load(images, masks, "images")
    val = None
    if val_images is not None:
        v = _Loader(target[:3] + (0,) + target[4:], norm, axis, spec, train_set.channels)
        v.load(val_images, val_masks, "val_images")
        val = v.ds
    elif val_split > 0:
        kind, val = train_set.ds.holdout(float(val_split), train_set.files, int(opts["seed"]))
        if kind == 0:
            warnings.warn(f"no validation data: the images are too small to hold back "
                          f"{100 * val_split:.0f}% of their rows; the model written is the last, "
                          "not the best (give val_images and val_masks)", stacklevel=2)
    # The default recipe's sizes and length for what is None or 0 (unet_plan_run, as unet train
    # plans them): base, batch, steps from the time budget; the tile of a same-padded U-Net from
    # the images left after the hold-back.
    name = o["arch"] or "unet"
    if resume is not None:
        depth_t = 0
    elif core is None:
        depth_t = depth if name == "unet" and not valid else 0
    else:
        c = core.config()
        depth_t = c["depth"] if c["arch"] == "unet" and c["padding"] != 0 else 0
    base, opts["batch"], opts["tile"], opts["epochs"], opts["steps"], _ = train_set.ds.plan(
        base or 0, opts["batch"] or 0, opts["tile"] or 0, epochs or 0, steps or 0, depth_t,
        float(minutes))
    if core is None:
        core = create(name, in_channels=train_set.channels, classes=classes, base=base,
                      depth=depth if name in ("unet", "unet-paper") else None,
                      bilinear=True if bilinear else None, conv_bias=True if conv_bias else None,
                      batchnorm=None if batchnorm else False, padding=0 if valid else None,
                      dropout=dropout, seed=seed)._m
    core.set_input(axis, spec)
    logf = _open_log(log, resumed_at) if log else None

    def on_event(ev):
        if logf is not None and ev["row"]:
            logf.write(ev["row"])
            logf.flush()
        return callback(ev) if callback is not None else False

    try:
        info = core.train(train_set.ds, val, opts, on_event, _threads(threads))
    finally:
        if logf is not None:
            logf.close()
    m = model if model is not None else Model(core)
    m.training = info
    return m


def _open_log(path, resumed_at):
    """The log for appending: a new file with the header, or when resuming (resumed_at: the
    checkpoint's step) its rows up to that step, as `unet train` keeps them."""
    keep = [_core.log_header()]
    if resumed_at is not None and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            rows = f.readlines()[1:]
        keep += [r for r in rows if r.split(",", 1)[0].isdigit() and
                 int(r.split(",", 1)[0]) <= resumed_at]
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)
    return open(path, "a", encoding="utf-8")
