"""unet: U-Net and FCN image segmentation (the C library include/unet.h) from Python.

    import unet
    m = unet.load("model.safetensors")
    labels = m.predict(image)                      # class id per pixel, uint8 (H, W)
    labels, prob = m.predict(image, probabilities=True)
    print(unet.evaluate(labels, truth)["mean_dice"])

Images are numpy arrays of any integer or float dtype: (H, W) for a one-channel model, (H, W, C)
for C channels, or a stack of either ((N, H, W), (N, H, W, C)).  They are normalised exactly as
`unet predict` normalises image files (8-bit / 255, 16-bit by the 1 and 99.8 percentiles per
image and channel, float and other integers as they are), so a prediction from Python equals
the command line's bit for bit.  Computation releases the GIL.  Errors of the C library raise
unet.Error subclasses carrying its message (docs/python.md).
"""
import os

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
__all__ = ["load", "create", "evaluate", "imread", "image_pages", "Model", "Error",
           "ArgumentError", "FileError", "FormatError", "NoMemoryError", "NumericError",
           "ShapeError", "StoppedError"]

# unet_dtype codes (include/unet.h)
_U8, _U16, _I32, _F32 = 1, 2, 3, 4
_NORMS = {"auto": 0, "percentile": 1, "max": 2, "none": 3}
_LOGITS, _PROBABILITIES = 1, 0  # unet_output


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
    def classes(self):
        return self._m.config()["classes"]

    @property
    def in_channels(self):
        return self._m.config()["in_channels"]

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
        """image as a list of planar (C, H, W) arrays (views where possible) and whether it
        was a stack."""
        a = np.asarray(image)
        C = self.in_channels
        if a.dtype == object or a.ndim < 2:
            raise ValueError(f"image: expected a 2-D image, (H, W, C) or a stack, got shape "
                             f"{a.shape} of {a.dtype}")
        if channel_axis is None:
            if C == 1:
                if a.ndim > 3:
                    raise ValueError(f"image: shape {a.shape}: a one-channel model takes (H, W) "
                                     "or a stack (N, H, W) (or say channel_axis=)")
                return (a[None, None] if a.ndim == 2 else a[:, None]), a.ndim == 3
            channel_axis = -1
        if a.ndim not in (3, 4):
            raise ValueError(f"image: shape {a.shape}: a {C}-channel model takes (H, W, C) or "
                             "a stack (N, H, W, C)")
        stack = a.ndim == 4
        ax = channel_axis % a.ndim
        if stack and ax == 0:
            raise ValueError("image: channel_axis 0 of a 4-D stack is the stack axis")
        if a.shape[ax] != C:
            raise ValueError(f"image: shape {a.shape} has {a.shape[ax]} channels on axis "
                             f"{channel_axis}; the model takes {C}")
        a = np.moveaxis(a, ax, 1 if stack else 0)
        return (a if stack else a[None]), stack

    def predict(self, image, *, tile=0, overlap=None, tta=False, batch=1, threads=None,
                probabilities=False, instances=False, logits=False, grow=2, norm="auto",
                channel_axis=None, precision="fp32"):
        """Segments an image of any size with overlapping tiles (as `unet predict`).

        image: (H, W) for a one-channel model, (H, W, C) for C channels, or a stack (N, ...);
            any integer or float dtype, normalised as `unet predict --norm` does (norm: "auto",
            "percentile", "max", "none").  channel_axis: where the channels are when not last.
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
        n, c, h, w = planes.shape
        K = self.classes
        kind = _LOGITS if logits else _PROBABILITIES  # unet predict: --logits without --tta
        labels = np.empty((n, h, w), np.uint8)
        out = np.empty((n, K, h, w), np.float32)
        inst = np.empty((n, h, w), np.int32) if instances else None
        logit_copy = np.empty((n, K, h, w), np.float32) if logits and probabilities else None
        args = (_NORMS[norm], int(tile), -1 if overlap is None else int(overlap), int(bool(tta)),
                int(batch), _threads(threads))
        for i in range(n):
            x, code = _as_unet_dtype(planes[i], "image" if n == 1 else f"image {i}")
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


def imread(path, page=0):
    """An image file (PNG, TIFF page, .npy) as unet reads it: the stored samples, (H, W) for
    one channel, else (H, W, C); dtype uint8, uint16, int32 or float32."""
    data, code, c, h, w = _core.imread(_check_file(path, "image"), int(page))
    dtype = {_U8: np.uint8, _U16: np.uint16, _I32: np.int32, _F32: np.float32}[code]
    a = np.frombuffer(data, dtype=dtype).reshape(c, h, w)
    return a[0] if c == 1 else np.moveaxis(a, 0, -1)


def image_pages(path):
    """The number of images in a file (TIFF pages; 1 for PNG and .npy)."""
    return _core.image_pages(_check_file(path, "image"))
