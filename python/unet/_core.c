/* _core.c — the CPython extension under the unet package (docs/python.md).
 *
 * A thin layer over include/unet.h: numpy arrays arrive through the buffer protocol (so this
 * file needs no numpy headers), checked for size and C-contiguity; every call that computes
 * runs with the GIL released, holding the model's own lock (a unet_model and its unet_ctx are
 * not shared between threads).  unet's status and message become an exception of the matching
 * class, whose text is the library's message.  Shapes, dtypes and the interpretation of
 * channel axes are the Python layer's (__init__.py); this layer trusts nothing it receives
 * and checks every buffer length again.
 *
 * Training (unet.train) is _train.c; _core.h is what the two files share.
 *
 * Memory: the input is read in place when it is float32 and its normalisation is the identity
 * (norm auto, max or none): no copy.  Otherwise one (c, h, w) float buffer holds the normalised
 * image.  Scratch comes from PyMem_RawMalloc (callable without the GIL, and traced by
 * tracemalloc, so tests see every byte this layer allocates).
 */
#include "_core.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Exceptions: one class per unet_status, all subclasses of unet.Error
 * ------------------------------------------------------------------------------------- */

static PyObject *error_base;                    /* unet.Error(Exception) */
static PyObject *error_of[UNET_STATUS_INTERRUPTED + 1];

PyObject *raise_msg(unet_status s, const char *msg) {
    PyObject *type = s > UNET_STATUS_OK && s <= UNET_STATUS_INTERRUPTED ? error_of[s] : error_base;
    PyObject *exc = PyObject_CallFunction(type, "s", msg && *msg ? msg : unet_status_str(s));
    if (!exc) return NULL;
    PyObject *status = PyUnicode_FromString(unet_status_str(s));
    if (status) {
        PyObject_SetAttrString(exc, "status", status);
        Py_DECREF(status);
    }
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *raise_status(unet_ctx *ctx, unet_status s) {
    return raise_msg(s, unet_ctx_errmsg(ctx));
}

PyObject *none(void) {
    Py_INCREF(Py_None);
    return Py_None;
}

/* ---------------------------------------------------------------------------------------
 * Buffers
 * ------------------------------------------------------------------------------------- */

/* A C-contiguous buffer of exactly `bytes` bytes (writable when asked) from obj; None gives an
 * empty view (b->obj NULL) when allow_none.  Returns 0 or -1 with an exception set. */
int get_buffer(PyObject *obj, Py_buffer *b, int writable, Py_ssize_t bytes, const char *what,
               int allow_none) {
    memset(b, 0, sizeof *b);
    if (obj == Py_None && allow_none) return 0;
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous%s array", what,
                     writable ? " writable" : "");
        return -1;
    }
    if (b->len != bytes) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, bytes, b->len);
        PyBuffer_Release(b);
        memset(b, 0, sizeof *b);
        return -1;
    }
    return 0;
}

void release(Py_buffer *b) {
    if (b->obj) PyBuffer_Release(b);
}

/* The size of c * h * w samples of `elem` bytes, or -1 (ValueError set) when a dimension is not
 * positive or the product overflows. */
Py_ssize_t plane_bytes(long long c, long long h, long long w, size_t elem) {
    if (c < 1 || h < 1 || w < 1 || h > INT32_MAX || w > INT32_MAX || c > INT32_MAX ||
        (unsigned long long)c * (unsigned long long)h > (unsigned long long)PY_SSIZE_T_MAX / (unsigned long long)w / elem) {
        PyErr_Format(PyExc_ValueError, "bad image size c=%lld h=%lld w=%lld", c, h, w);
        return -1;
    }
    return (Py_ssize_t)(c * h * w * (long long)elem);
}

/* ---------------------------------------------------------------------------------------
 * Model objects
 * ------------------------------------------------------------------------------------- */

static PyTypeObject ModelType;

/* Takes the model's lock, waiting without the GIL. */
void model_lock(ModelObject *self) {
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

void model_unlock(ModelObject *self) {
    PyThread_release_lock(self->lock);
}

ModelObject *model_new(void) {
    ModelObject *self = PyObject_New(ModelObject, &ModelType);
    if (!self) return NULL;
    self->m = NULL;
    self->ctx = unet_ctx_create();
    self->lock = PyThread_allocate_lock();
    if (!self->ctx || !self->lock) {
        Py_DECREF(self);
        return (ModelObject *)PyErr_NoMemory();
    }
    self->default_threads = unet_ctx_threads(self->ctx);
    return self;
}

static void model_dealloc(ModelObject *self) {
    unet_model_free(self->m);
    unet_ctx_free(self->ctx);
    if (self->lock) PyThread_free_lock(self->lock);
    PyObject_Free(self);
}

/* threads: 0 = the default; else 1..1024.  Needs the lock. */
unet_status set_threads(ModelObject *self, int threads) {
    return unet_ctx_set_threads(self->ctx, threads > 0 ? threads : self->default_threads);
}

/* A Model from the checkpoint at args' path: a plain model, or with training (its optimizer
 * state and run metadata, for unet.train's resume). */
static PyObject *load_model(PyObject *args, const char *fmt, bool training) {
    PyObject *path_obj = NULL;
    if (!PyArg_ParseTuple(args, fmt, PyUnicode_FSConverter, &path_obj)) return NULL;
    ModelObject *self = model_new();
    if (!self) {
        Py_DECREF(path_obj);
        return NULL;
    }
    unet_status s;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    s = training ? unet_model_load_training(self->ctx, path, &self->m, NULL, NULL)
                 : unet_model_load(self->ctx, path, &self->m);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (s != UNET_STATUS_OK) {
        raise_status(self->ctx, s);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* load(path) -> Model */
static PyObject *core_load(PyObject *mod, PyObject *args) {
    (void)mod;
    return load_model(args, "O&:load", false);
}

/* load_training(path) -> Model with its optimizer state and run metadata */
PyObject *core_load_training(PyObject *mod, PyObject *args) {
    (void)mod;
    return load_model(args, "O&:load_training", true);
}

/* create(arch, in_channels, classes, base, depth, bilinear, conv_bias, batchnorm, padding,
 *        dropout, fc_channels, learn_final_up, seed) -> Model; negative ints (NaN dropout) keep
 * the architecture's default. */
static PyObject *core_create(PyObject *mod, PyObject *args) {
    (void)mod;
    const char *arch_name;
    int in_channels, classes, base, depth, bilinear, conv_bias, batchnorm, padding, fc_channels,
        learn_final_up;
    double dropout;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "siiiiiiiidiiK:create", &arch_name, &in_channels, &classes, &base,
                          &depth, &bilinear, &conv_bias, &batchnorm, &padding, &dropout,
                          &fc_channels, &learn_final_up, &seed))
        return NULL;
    ModelObject *self = model_new();
    if (!self) return NULL;
    unet_arch arch;
    unet_status s = unet_arch_parse(self->ctx, arch_name, &arch);
    if (s == UNET_STATUS_OK) {
        unet_config c = unet_config_default(arch);
        if (in_channels >= 0) c.in_channels = in_channels;
        if (classes >= 0) c.classes = classes;
        if (base >= 0) c.base = base;
        if (depth >= 0) c.depth = depth;
        if (bilinear >= 0) c.up = bilinear ? UNET_UP_BILINEAR : UNET_UP_TRANSPOSE;
        if (conv_bias >= 0) c.conv_bias = conv_bias;
        if (batchnorm >= 0) c.batchnorm = batchnorm;
        if (padding >= 0) c.padding = padding;
        if (!isnan(dropout)) c.dropout = (float)dropout;
        if (fc_channels >= 0) c.fc_channels = fc_channels;
        if (learn_final_up >= 0) c.learn_final_up = learn_final_up;
        s = unet_model_create(self->ctx, &c, (uint64_t)seed, &self->m);
    }
    if (s != UNET_STATUS_OK) {
        raise_status(self->ctx, s);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *model_config(ModelObject *self, PyObject *unused) {
    (void)unused;
    const unet_config *c = unet_model_config(self->m);
    return Py_BuildValue(
        "{s:s,s:i,s:i,s:i,s:i,s:s,s:O,s:O,s:i,s:d,s:s,s:i,s:O,s:n}", "arch", unet_arch_name(c->arch),
        "in_channels", c->in_channels, "classes", c->classes, "base", c->base, "depth", c->depth,
        "up", c->up == UNET_UP_BILINEAR ? "bilinear" : "transpose", "conv_bias",
        c->conv_bias ? Py_True : Py_False, "batchnorm", c->batchnorm ? Py_True : Py_False,
        "padding", c->padding, "dropout", (double)c->dropout, "init",
        c->init == UNET_INIT_HE ? "he" : "pytorch", "fc_channels", c->fc_channels,
        "learn_final_up", c->learn_final_up ? Py_True : Py_False, "parameters",
        (Py_ssize_t)unet_model_param_count(self->m));
}

/* tensors() -> [(name, shape tuple, trainable)] */
static PyObject *model_tensors(ModelObject *self, PyObject *unused) {
    (void)unused;
    int n = unet_model_tensors(self->m);
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        const char *name;
        int nd, tr;
        int64_t sh[4];
        unet_model_tensor(self->m, i, &name, &nd, sh, &tr);
        PyObject *shape = PyTuple_New(nd);
        for (int d = 0; shape && d < nd; d++) PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(sh[d]));
        PyObject *item = shape ? Py_BuildValue("(sNO)", name, shape, tr ? Py_True : Py_False) : NULL;
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* output_size(h, w) -> (out_h, out_w) */
static PyObject *model_output_size(ModelObject *self, PyObject *args) {
    int h, w, oh = 0, ow = 0;
    if (!PyArg_ParseTuple(args, "ii:output_size", &h, &w)) return NULL;
    model_lock(self);
    unet_status s = unet_model_output_size(self->ctx, self->m, h, w, &oh, &ow);
    PyObject *r = s == UNET_STATUS_OK ? Py_BuildValue("(ii)", oh, ow) : raise_status(self->ctx, s);
    model_unlock(self);
    return r;
}

/* round_size(n) -> the smallest valid tile side >= n */
static PyObject *model_round_size(ModelObject *self, PyObject *args) {
    int n, r = 0;
    if (!PyArg_ParseTuple(args, "i:round_size", &n)) return NULL;
    model_lock(self);
    unet_status s = unet_model_round_size(self->ctx, self->m, n, &r);
    PyObject *res = s == UNET_STATUS_OK ? PyLong_FromLong(r) : raise_status(self->ctx, s);
    model_unlock(self);
    return res;
}

/* cost(h, w) -> (flops, activation bytes) of one image */
static PyObject *model_cost(ModelObject *self, PyObject *args) {
    int h, w;
    double flops = 0;
    size_t act = 0;
    if (!PyArg_ParseTuple(args, "ii:cost", &h, &w)) return NULL;
    model_lock(self);
    unet_status s = unet_model_cost(self->ctx, self->m, 1, h, w, &flops, &act);
    PyObject *r = s == UNET_STATUS_OK ? Py_BuildValue("(dn)", flops, (Py_ssize_t)act)
                                      : raise_status(self->ctx, s);
    model_unlock(self);
    return r;
}

/* The first non-finite sample of n floats, or -1. */
static Py_ssize_t first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (Py_ssize_t)i;
    return -1;
}

/* ValueError naming sample i of a stack of (c, h, w) float images. */
static PyObject *raise_nonfinite(const char *what, const float *x, Py_ssize_t i, int c, int h,
                                 int w) {
    char v[32];
    Py_ssize_t plane = (Py_ssize_t)h * w, image = plane * c;
    snprintf(v, sizeof v, "%g", (double)x[i]);
    return PyErr_Format(PyExc_ValueError,
                        "%s: non-finite value %s at image %zd, channel %zd, y=%zd, x=%zd (unet "
                        "takes finite images only: replace NaN and Inf first)",
                        what, v, i / image, i % image / plane, i % plane / w, i % w);
}

/* Instance labels as unet predict --instances makes them (unet_segment_instances with its
 * defaults and `grow`): the watershed floods by the cells' probability (plane 1, or the only
 * plane), made from logits exactly as the CLI does (unet_probabilities). */
static unet_status instances(unet_ctx *ctx, const int32_t *cls, const float *out, int K, int h,
                             int w, unet_output output, int grow, int32_t *inst, int *count,
                             bool *nomem) {
    const size_t P = (size_t)h * w;
    float *tmp = NULL;
    unet_status s = UNET_STATUS_OK;
    if (output == UNET_OUTPUT_LOGITS) {
        tmp = PyMem_RawMalloc((size_t)K * P * sizeof(float));
        if (!tmp) {
            *nomem = true;
            return UNET_STATUS_NOMEM;
        }
        memcpy(tmp, out, (size_t)K * P * sizeof(float));
        s = unet_probabilities(ctx, tmp, K, h, w);
        out = tmp;
    }
    unet_instance_opts io = unet_instance_defaults();
    io.grow = grow;
    if (s == UNET_STATUS_OK)
        s = unet_segment_instances(ctx, cls, out + (K > 1 ? P : 0), h, w, &io, inst, count);
    PyMem_RawFree(tmp);
    return s;
}

/* predict(image, dtype, c, h, w, norm, out, output, labels, instances, grow, tile, overlap,
 *         tta, batch, threads)
 * image: c * h * w samples of dtype (a unet_dtype); out: classes * h * w float32, receives
 * logits or probabilities (output, a unet_output); labels: h * w uint8 class ids or None;
 * instances: h * w int32 or None (needs labels).  Returns the instance count (0 without). */
static PyObject *model_predict(ModelObject *self, PyObject *args) {
    PyObject *img_obj, *out_obj, *lab_obj, *inst_obj;
    int dtype, c, h, w, norm, output, grow, tile, overlap, tta, batch, threads;
    if (!PyArg_ParseTuple(args, "OiiiiiOiOOiiiiii:predict", &img_obj, &dtype, &c, &h, &w, &norm,
                          &out_obj, &output, &lab_obj, &inst_obj, &grow, &tile, &overlap, &tta,
                          &batch, &threads))
        return NULL;
    if (dtype < UNET_DTYPE_U8 || dtype > UNET_DTYPE_F32)
        return PyErr_Format(PyExc_ValueError, "unknown dtype code %d", dtype);
    const unet_config *cfg = unet_model_config(self->m);
    if (c != cfg->in_channels)
        return PyErr_Format(PyExc_ValueError, "image has %d channels; the model takes %d", c,
                            cfg->in_channels);
    Py_ssize_t in_bytes = plane_bytes(c, h, w, unet_dtype_size((unet_dtype)dtype));
    Py_ssize_t out_bytes = plane_bytes(cfg->classes, h, w, sizeof(float));
    if (in_bytes < 0 || out_bytes < 0) return NULL;
    if (inst_obj != Py_None && lab_obj == Py_None)
        return PyErr_Format(PyExc_ValueError, "instances need labels");
    Py_buffer img, out, lab, inst;
    if (get_buffer(img_obj, &img, 0, in_bytes, "image", 0) < 0) return NULL;
    if (get_buffer(out_obj, &out, 1, out_bytes, "out", 0) < 0) {
        release(&img);
        return NULL;
    }
    if (get_buffer(lab_obj, &lab, 1, (Py_ssize_t)h * w, "labels", 1) < 0 ||
        get_buffer(inst_obj, &inst, 1, (Py_ssize_t)h * w * 4, "instances", 1) < 0) {
        release(&lab);
        release(&img);
        release(&out);
        return NULL;
    }
    model_lock(self);
    unet_status s = set_threads(self, threads);
    const size_t n = (size_t)c * h * w, P = (size_t)h * w;
    Py_ssize_t bad = -1;
    float *conv = NULL;
    int32_t *cls = NULL;
    int count = 0;
    bool nomem = false;
    Py_BEGIN_ALLOW_THREADS
    const float *x = img.buf;
    if (s == UNET_STATUS_OK && dtype == UNET_DTYPE_F32) bad = first_nonfinite(img.buf, n);
    if (s == UNET_STATUS_OK && bad < 0 &&
        !(dtype == UNET_DTYPE_F32 && norm != UNET_NORM_PERCENTILE)) {
        /* unet predict's conversion (cli_load_image: unet_image_to_float) */
        unet_image im = {.w = w, .h = h, .c = c, .dtype = (unet_dtype)dtype, .data = img.buf};
        conv = PyMem_RawMalloc(n * sizeof(float));
        if (!conv) nomem = true;
        else s = unet_image_to_float(self->ctx, &im, (unet_norm)norm, conv);
        x = conv;
    }
    if (s == UNET_STATUS_OK && bad < 0 && !nomem) {
        unet_predict_opts po = unet_predict_defaults();
        po.tile = tile;
        if (overlap >= 0) po.overlap = overlap;
        po.tta = tta;
        po.batch = batch;
        po.output = (unet_output)output;
        s = unet_predict(self->ctx, self->m, x, h, w, &po, out.buf, NULL, NULL);
    }
    if (s == UNET_STATUS_OK && bad < 0 && !nomem && lab.obj) {
        cls = PyMem_RawMalloc(P * sizeof(int32_t));
        if (!cls) {
            nomem = true;
        } else {
            unet_argmax(out.buf, cfg->classes, h, w, (unet_output)output, cls);
            uint8_t *l8 = lab.buf;
            for (size_t i = 0; i < P; i++) l8[i] = (uint8_t)cls[i];
            if (inst.obj) s = instances(self->ctx, cls, out.buf, cfg->classes, h, w,
                                        (unet_output)output, grow, inst.buf, &count, &nomem);
        }
    }
    PyMem_RawFree(conv);
    PyMem_RawFree(cls);
    Py_END_ALLOW_THREADS
    PyObject *r;
    if (bad >= 0) r = raise_nonfinite("image", img.buf, bad, c, h, w);
    else if (nomem) r = PyErr_NoMemory();
    else if (s != UNET_STATUS_OK) r = raise_status(self->ctx, s);
    else r = PyLong_FromLong(count);
    model_unlock(self);
    release(&img);
    release(&out);
    release(&lab);
    release(&inst);
    return r;
}

/* forward(x, n, h, w, out, threads): logits of a float32 batch (n, in_channels, h, w) into out
 * (n, classes, out_h, out_w), one pass, no tiles. */
static PyObject *model_forward(ModelObject *self, PyObject *args) {
    PyObject *x_obj, *out_obj;
    int n, h, w, threads, oh = 0, ow = 0;
    if (!PyArg_ParseTuple(args, "OiiiOi:forward", &x_obj, &n, &h, &w, &out_obj, &threads))
        return NULL;
    const unet_config *cfg = unet_model_config(self->m);
    model_lock(self);
    unet_status s = unet_model_output_size(self->ctx, self->m, h, w, &oh, &ow);
    model_unlock(self);
    if (s != UNET_STATUS_OK) return raise_status(self->ctx, s);
    Py_ssize_t in_bytes = plane_bytes((long long)n * cfg->in_channels, h, w, sizeof(float));
    Py_ssize_t out_bytes = plane_bytes((long long)n * cfg->classes, oh, ow, sizeof(float));
    if (in_bytes < 0 || out_bytes < 0) return NULL;
    Py_buffer x, out;
    if (get_buffer(x_obj, &x, 0, in_bytes, "x", 0) < 0) return NULL;
    if (get_buffer(out_obj, &out, 1, out_bytes, "out", 0) < 0) {
        release(&x);
        return NULL;
    }
    model_lock(self);
    s = set_threads(self, threads);
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS
    if (s == UNET_STATUS_OK) bad = first_nonfinite(x.buf, (size_t)in_bytes / sizeof(float));
    if (s == UNET_STATUS_OK && bad < 0)
        s = unet_model_forward(self->ctx, self->m, x.buf, n, h, w, out.buf);
    Py_END_ALLOW_THREADS
    PyObject *r = bad >= 0 ? raise_nonfinite("x", x.buf, bad, cfg->in_channels, h, w)
                  : s != UNET_STATUS_OK ? raise_status(self->ctx, s) : Py_BuildValue("(ii)", oh, ow);
    model_unlock(self);
    release(&x);
    release(&out);
    return r;
}

/* save(path) */
/* input() -> (channel_axis, channels or None): the layout the model was trained on. */
static PyObject *model_input(ModelObject *self, PyObject *unused) {
    (void)unused;
    int axis;
    const char *channels;
    unet_model_input(self->m, &axis, &channels);
    return Py_BuildValue("(iz)", axis, channels);
}

/* set_input(channel_axis, channels or None): the layout recorded with the model
 * (unet_model_set_input), as unet train records --channel-axis and --channels. */
static PyObject *model_set_input(ModelObject *self, PyObject *args) {
    int axis;
    const char *channels;
    if (!PyArg_ParseTuple(args, "iz:set_input", &axis, &channels)) return NULL;
    model_lock(self);
    unet_status s = unet_model_set_input(self->ctx, self->m, axis, channels);
    PyObject *r = s == UNET_STATUS_OK ? none() : raise_status(self->ctx, s);
    model_unlock(self);
    return r;
}

static PyObject *model_save(ModelObject *self, PyObject *args) {
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&:save", PyUnicode_FSConverter, &path_obj)) return NULL;
    model_lock(self);
    unet_status s;
    Py_BEGIN_ALLOW_THREADS
    s = unet_model_save(self->ctx, self->m, PyBytes_AS_STRING(path_obj));
    Py_END_ALLOW_THREADS
    PyObject *r = s == UNET_STATUS_OK ? none() : raise_status(self->ctx, s);
    model_unlock(self);
    Py_DECREF(path_obj);
    return r;
}

/* export_onnx(path, probabilities) */
static PyObject *model_export_onnx(ModelObject *self, PyObject *args) {
    PyObject *path_obj;
    int prob;
    if (!PyArg_ParseTuple(args, "O&p:export_onnx", PyUnicode_FSConverter, &path_obj, &prob))
        return NULL;
    model_lock(self);
    unet_status s;
    Py_BEGIN_ALLOW_THREADS
    s = unet_export_onnx(self->ctx, self->m, PyBytes_AS_STRING(path_obj),
                         prob ? UNET_OUTPUT_PROBABILITIES : UNET_OUTPUT_LOGITS);
    Py_END_ALLOW_THREADS
    PyObject *r = s == UNET_STATUS_OK ? none() : raise_status(self->ctx, s);
    model_unlock(self);
    Py_DECREF(path_obj);
    return r;
}

/* set_precision(name): "fp32" or "bf16" (unet_model_set_precision); returns whether this CPU
 * runs it as asked (bf16 falls back to fp32 without AVX512_BF16). */
static PyObject *model_set_precision(ModelObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s:set_precision", &name)) return NULL;
    model_lock(self);
    unet_precision p;
    unet_status s = unet_precision_parse(self->ctx, name, &p);
    if (s == UNET_STATUS_OK) s = unet_model_set_precision(self->ctx, self->m, p);
    PyObject *r = s == UNET_STATUS_OK ? PyBool_FromLong(unet_precision_native(p))
                                      : raise_status(self->ctx, s);
    model_unlock(self);
    return r;
}

/* set_cache(on), cache(), cache_bytes(): the inference cache (unet_model_set_cache). */
static PyObject *model_set_cache(ModelObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p:set_cache", &on)) return NULL;
    model_lock(self);
    unet_model_set_cache(self->m, on);
    model_unlock(self);
    return none();
}

static PyObject *model_cache(ModelObject *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(unet_model_cache(self->m));
}

static PyObject *model_cache_bytes(ModelObject *self, PyObject *unused) {
    (void)unused;
    return PyLong_FromUnsignedLongLong(unet_model_cache_bytes(self->m));
}

static PyMethodDef model_methods[] = {
    {"set_precision", (PyCFunction)model_set_precision, METH_VARARGS,
     "see unet.Model.predict's precision"},
    {"set_cache", (PyCFunction)model_set_cache, METH_VARARGS, "see unet.Model.cache"},
    {"cache", (PyCFunction)model_cache, METH_NOARGS, "see unet.Model.cache"},
    {"cache_bytes", (PyCFunction)model_cache_bytes, METH_NOARGS, "see unet.Model.cache"},
    {"config", (PyCFunction)model_config, METH_NOARGS, "the architecture as a dict"},
    {"tensors", (PyCFunction)model_tensors, METH_NOARGS, "[(name, shape, trainable)]"},
    {"output_size", (PyCFunction)model_output_size, METH_VARARGS, "(out_h, out_w) for (h, w)"},
    {"round_size", (PyCFunction)model_round_size, METH_VARARGS, "smallest valid tile side >= n"},
    {"cost", (PyCFunction)model_cost, METH_VARARGS, "(flops, activation bytes) at (h, w)"},
    {"predict", (PyCFunction)model_predict, METH_VARARGS, "see unet.Model.predict"},
    {"forward", (PyCFunction)model_forward, METH_VARARGS, "see unet.Model.forward"},
    {"save", (PyCFunction)model_save, METH_VARARGS, "write a safetensors checkpoint"},
    {"input", (PyCFunction)model_input, METH_NOARGS, "(channel_axis, channels) it was trained on"},
    {"set_input", (PyCFunction)model_set_input, METH_VARARGS, "record the input layout"},
    {"export_onnx", (PyCFunction)model_export_onnx, METH_VARARGS, "write an ONNX file"},
    TRAIN_MODEL_METHODS
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "unet._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a loaded unet model (use unet.load)",
    .tp_methods = model_methods,
};

/* ---------------------------------------------------------------------------------------
 * Module functions
 * ------------------------------------------------------------------------------------- */

static PyObject *dbl(double v) {
    return PyFloat_FromDouble(v);
}

/* evaluate(pred, truth, pred_inst, truth_inst, h, w, classes) -> dict; int32 buffers. */
static PyObject *core_evaluate(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *po, *to, *pio, *tio;
    int h, w, classes;
    if (!PyArg_ParseTuple(args, "OOOOiii:evaluate", &po, &to, &pio, &tio, &h, &w, &classes))
        return NULL;
    Py_ssize_t bytes = plane_bytes(1, h, w, sizeof(int32_t));
    if (bytes < 0) return NULL;
    Py_buffer p, t, pi, ti;
    memset(&t, 0, sizeof t), memset(&pi, 0, sizeof pi), memset(&ti, 0, sizeof ti);
    if (get_buffer(po, &p, 0, bytes, "pred", 0) < 0) return NULL;
    PyObject *r = NULL;
    if (get_buffer(to, &t, 0, bytes, "truth", 0) < 0 ||
        get_buffer(pio, &pi, 0, bytes, "pred_instances", 1) < 0 ||
        get_buffer(tio, &ti, 0, bytes, "truth_instances", 1) < 0)
        goto done;
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) {
        r = PyErr_NoMemory();
        goto done;
    }
    unet_metrics mt;
    unet_status s;
    Py_BEGIN_ALLOW_THREADS
    s = unet_evaluate(ctx, p.buf, t.buf, pi.obj ? pi.buf : NULL, ti.obj ? ti.buf : NULL, h, w,
                      classes, &mt);
    Py_END_ALLOW_THREADS
    if (s != UNET_STATUS_OK) {
        raise_status(ctx, s);
    } else {
        PyObject *iou = PyList_New(mt.classes), *dice = PyList_New(mt.classes);
        for (int k = 0; iou && dice && k < mt.classes; k++) {
            PyList_SET_ITEM(iou, k, dbl(mt.iou[k]));
            PyList_SET_ITEM(dice, k, dbl(mt.dice[k]));
        }
        if (iou && dice)
            r = Py_BuildValue("{s:i,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:i,s:i}", "classes",
                              mt.classes, "pixel_error", dbl(mt.pixel_error), "iou", iou, "dice",
                              dice, "mean_iou", dbl(mt.mean_iou), "mean_dice", dbl(mt.mean_dice),
                              "rand_error", dbl(mt.rand_error), "seg", dbl(mt.seg), "ap50",
                              dbl(mt.ap50), "n_true", mt.n_true, "n_pred", mt.n_pred);
        else Py_XDECREF(iou), Py_XDECREF(dice);
    }
    unet_ctx_free(ctx);
done:
    release(&p);
    release(&t);
    release(&pi);
    release(&ti);
    return r;
}

/* imread(path, page, channel_axis, palette_indices) -> (bytearray, dtype, c, h, w): the
 * samples as stored, planar, under unet_image_opts. */
static PyObject *core_imread(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *path_obj;
    int page;
    unet_image_opts o = unet_image_defaults();
    if (!PyArg_ParseTuple(args, "O&iip:imread", PyUnicode_FSConverter, &path_obj, &page,
                          &o.channel_axis, &o.palette_indices))
        return NULL;
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) {
        Py_DECREF(path_obj);
        return PyErr_NoMemory();
    }
    unet_image img = {0};
    unet_status s;
    Py_BEGIN_ALLOW_THREADS
    s = unet_image_load_with(ctx, PyBytes_AS_STRING(path_obj), page, &o, &img);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    PyObject *r = NULL;
    if (s != UNET_STATUS_OK) {
        raise_status(ctx, s);
    } else {
        size_t bytes = (size_t)img.c * img.h * img.w * unet_dtype_size(img.dtype);
        PyObject *data = PyByteArray_FromStringAndSize(img.data, (Py_ssize_t)bytes);
        if (data) r = Py_BuildValue("(Niiii)", data, (int)img.dtype, img.c, img.h, img.w);
    }
    unet_image_free(&img);
    unet_ctx_free(ctx);
    return r;
}

/* v as a Python int when s is OK, else the library's error; frees ctx (may be NULL: out of
 * memory). */
static PyObject *int_or_raise(unet_ctx *ctx, unet_status s, long v) {
    PyObject *r = !ctx ? PyErr_NoMemory() : s == UNET_STATUS_OK ? PyLong_FromLong(v)
                                                                : raise_status(ctx, s);
    unet_ctx_free(ctx);
    return r;
}

/* image_pages(path, channel_axis) -> pages in the file */
static PyObject *core_image_pages(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *path_obj;
    unet_image_opts o = unet_image_defaults();
    if (!PyArg_ParseTuple(args, "O&i:image_pages", PyUnicode_FSConverter, &path_obj,
                          &o.channel_axis))
        return NULL;
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) {
        Py_DECREF(path_obj);
        return PyErr_NoMemory();
    }
    int pages = 0;
    unet_status s = unet_image_pages_with(ctx, PyBytes_AS_STRING(path_obj), &o, &pages);
    Py_DECREF(path_obj);
    return int_or_raise(ctx, s, pages);
}

/* channel_axis(shape, channel_axis) -> the channel axis of an array of that shape (2 or 3
 * dimensions) under unet's rule (unet_channel_axis_of), or -1 for none. */
static PyObject *core_channel_axis(PyObject *mod, PyObject *args) {
    (void)mod;
    int code, axis = -1;
    PyObject *shape;
    if (!PyArg_ParseTuple(args, "Oi:channel_axis", &shape, &code)) return NULL;
    if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) < 2 || PyTuple_GET_SIZE(shape) > 3)
        return PyErr_Format(PyExc_ValueError, "channel_axis: expected a shape of 2 or 3 dimensions");
    int ndim = (int)PyTuple_GET_SIZE(shape);
    int64_t dims[3];
    for (int i = 0; i < ndim; i++) {
        dims[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, i));
        if (dims[i] == -1 && PyErr_Occurred()) return NULL;
    }
    unet_ctx *ctx = unet_ctx_create();
    unet_status s = ctx ? unet_channel_axis_of(ctx, ndim, dims, code, &axis) : UNET_STATUS_NOMEM;
    return int_or_raise(ctx, s, axis);
}

/* channels_count(spec, c, name) -> the channels spec gives an image of c (unet_channels_count). */
static PyObject *core_channels_count(PyObject *mod, PyObject *args) {
    (void)mod;
    const char *spec, *name;
    int c, out = 0;
    if (!PyArg_ParseTuple(args, "sis:channels_count", &spec, &c, &name)) return NULL;
    unet_ctx *ctx = unet_ctx_create();
    unet_status s = ctx ? unet_channels_count(ctx, spec, c, name, &out) : UNET_STATUS_NOMEM;
    return int_or_raise(ctx, s, out);
}

/* select_channels(image, dtype, c, h, w, spec, name) -> (bytearray, c): the planar samples
 * after unet_image_select_channels (the same dtype). */
static PyObject *core_select_channels(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *obj;
    int dtype, c, h, w;
    const char *spec, *name;
    if (!PyArg_ParseTuple(args, "Oiiiiss:select_channels", &obj, &dtype, &c, &h, &w, &spec, &name))
        return NULL;
    if (dtype < UNET_DTYPE_U8 || dtype > UNET_DTYPE_F32)
        return PyErr_Format(PyExc_ValueError, "unknown dtype code %d", dtype);
    Py_ssize_t bytes = plane_bytes(c, h, w, unet_dtype_size((unet_dtype)dtype));
    Py_buffer b;
    if (bytes < 0 || get_buffer(obj, &b, 0, bytes, "image", 0) < 0) return NULL;
    unet_ctx *ctx = unet_ctx_create();
    unet_image img = {0};
    unet_status s = ctx ? unet_image_alloc(ctx, &img, w, h, c, (unet_dtype)dtype) : UNET_STATUS_NOMEM;
    if (s == UNET_STATUS_OK) {
        memcpy(img.data, b.buf, (size_t)bytes);
        Py_BEGIN_ALLOW_THREADS
        s = unet_image_select_channels(ctx, &img, spec, name);
        Py_END_ALLOW_THREADS
    }
    PyObject *r = NULL;
    if (s == UNET_STATUS_OK) {
        PyObject *data = PyByteArray_FromStringAndSize(
            img.data, (Py_ssize_t)((size_t)img.c * h * w * unet_dtype_size(img.dtype)));
        if (data) r = Py_BuildValue("(Ni)", data, img.c);
    } else {
        r = ctx ? raise_status(ctx, s) : PyErr_NoMemory();
    }
    unet_image_free(&img);
    unet_ctx_free(ctx);
    release(&b);
    return r;
}

/* probabilities(out, classes, h, w): logits to probabilities in place (float32 buffer). */
static PyObject *core_probabilities(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *o;
    int k, h, w;
    if (!PyArg_ParseTuple(args, "Oiii:probabilities", &o, &k, &h, &w)) return NULL;
    Py_ssize_t bytes = plane_bytes(k, h, w, sizeof(float));
    Py_buffer b;
    if (bytes < 0 || get_buffer(o, &b, 1, bytes, "out", 0) < 0) return NULL;
    unet_ctx *ctx = unet_ctx_create();
    unet_status s = UNET_STATUS_NOMEM;
    if (ctx) {
        Py_BEGIN_ALLOW_THREADS
        s = unet_probabilities(ctx, b.buf, k, h, w);
        Py_END_ALLOW_THREADS
    }
    PyObject *r = s == UNET_STATUS_OK ? none()
                  : ctx                ? raise_status(ctx, s)
                                       : PyErr_NoMemory();
    unet_ctx_free(ctx);
    release(&b);
    return r;
}

static PyMethodDef core_methods[] = {
    {"load", core_load, METH_VARARGS, "load(path) -> Model"},
    {"create", core_create, METH_VARARGS, "create(...) -> Model with fresh parameters"},
    {"evaluate", core_evaluate, METH_VARARGS, "metrics of a class map against the truth"},
    {"imread", core_imread, METH_VARARGS, "(bytearray, dtype, c, h, w) of an image file"},
    {"image_pages", core_image_pages, METH_VARARGS, "images in a file"},
    {"probabilities", core_probabilities, METH_VARARGS, "logits to probabilities in place"},
    {"channel_axis", core_channel_axis, METH_VARARGS, "unet's channel rule for an array shape"},
    {"select_channels", core_select_channels, METH_VARARGS, "choose or convert channels"},
    {"channels_count", core_channels_count, METH_VARARGS, "channels a spec gives"},
    TRAIN_CORE_METHODS
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "unet._core", "unet's C library (include/unet.h)", -1, core_methods,
    NULL, NULL, NULL, NULL,
};

/* unet.<name>: a subclass of unet.Error and of a built-in exception. */
static int add_error(PyObject *mod, unet_status s, const char *name, PyObject *builtin) {
    char full[64];
    snprintf(full, sizeof full, "unet.%s", name);
    PyObject *bases = PyTuple_Pack(2, error_base, builtin);
    if (!bases) return -1;
    error_of[s] = PyErr_NewException(full, bases, NULL);
    Py_DECREF(bases);
    if (!error_of[s]) return -1;
    Py_INCREF(error_of[s]);
    return PyModule_AddObject(mod, name, error_of[s]);
}

PyMODINIT_FUNC PyInit__core(void);
PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&ModelType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&core_module);
    if (!mod) return NULL;
    error_base = PyErr_NewExceptionWithDoc(
        "unet.Error", "A failure reported by the unet library; str() is its message and .status "
        "the kind (unet_status_str).", NULL, NULL);
    if (!error_base) goto fail;
    Py_INCREF(error_base);
    if (PyModule_AddObject(mod, "Error", error_base) < 0) goto fail;
    if (add_error(mod, UNET_STATUS_NOMEM, "NoMemoryError", PyExc_MemoryError) < 0 ||
        add_error(mod, UNET_STATUS_IO, "FileError", PyExc_OSError) < 0 ||
        add_error(mod, UNET_STATUS_FORMAT, "FormatError", PyExc_ValueError) < 0 ||
        add_error(mod, UNET_STATUS_SHAPE, "ShapeError", PyExc_ValueError) < 0 ||
        add_error(mod, UNET_STATUS_ARG, "ArgumentError", PyExc_ValueError) < 0 ||
        add_error(mod, UNET_STATUS_NUMERIC, "NumericError", PyExc_ArithmeticError) < 0 ||
        add_error(mod, UNET_STATUS_INTERRUPTED, "StoppedError", PyExc_RuntimeError) < 0)
        goto fail;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(mod, "Model", (PyObject *)&ModelType) < 0) goto fail;
    if (train_add_types(mod) < 0) goto fail;
    if (PyModule_AddStringConstant(mod, "version", UNET_VERSION) < 0) goto fail;
    return mod;
fail:
    Py_DECREF(mod);
    return NULL;
}
