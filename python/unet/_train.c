/* _train.c — unet.train's half of the extension (docs/python.md): training sets built from
 * numpy arrays or image files exactly as `unet train` builds them (unet_dataset_add_image,
 * unet_dataset_add_file, unet_dataset_holdout), and a run of the library's training loop
 * (unet_trainer) whose events call a Python function.
 *
 * The loop runs with the GIL released and the model's lock held; each event takes the GIL
 * back, checks for a pending signal (Ctrl-C in a notebook stops the run cleanly after the step
 * in flight), and calls the callback with a dict.  A true return value, a signal or an
 * exception in the callback stops the run: the library finishes the step, writes the
 * resumable checkpoint and returns, and the exception is raised then.
 */
#include "_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Training sets
 * ------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    unet_dataset *ds;
    unet_ctx     *ctx;
} DatasetObject;

static PyTypeObject DatasetType;

static DatasetObject *dataset_new(void) {
    DatasetObject *self = PyObject_New(DatasetObject, &DatasetType);
    if (!self) return NULL;
    self->ds = NULL;
    self->ctx = unet_ctx_create();
    if (!self->ctx) {
        Py_DECREF(self);
        return (DatasetObject *)PyErr_NoMemory();
    }
    return self;
}

static void dataset_dealloc(DatasetObject *self) {
    unet_dataset_free(self->ds);
    unet_ctx_free(self->ctx);
    PyObject_Free(self);
}

/* dataset(channels) -> Dataset */
PyObject *core_dataset(PyObject *mod, PyObject *args) {
    (void)mod;
    int channels;
    if (!PyArg_ParseTuple(args, "i:dataset", &channels)) return NULL;
    DatasetObject *self = dataset_new();
    if (!self) return NULL;
    unet_status s = unet_dataset_create(self->ctx, channels, &self->ds);
    if (s != UNET_STATUS_OK) {
        raise_status(self->ctx, s);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* (classes, separate_cells, gap, weights, w0, sigma) -> unet_target_opts */
static int target_opts(PyObject *t, unet_target_opts *o) {
    *o = unet_target_defaults();
    return PyArg_ParseTuple(t, "iiiiff:target", &o->classes, &o->separate_cells, &o->gap,
                            &o->weights, &o->w0, &o->sigma)
               ? 0
               : -1;
}

static PyObject *dataset_count(DatasetObject *self, PyObject *unused) {
    (void)unused;
    return PyLong_FromLong(unet_dataset_count(self->ds));
}

/* add_array(image, dtype, c, h, w, mask, mask_dtype, norm, target, name): image c * h * w
 * samples of a unet_dtype, planar; mask h * w samples. */
static PyObject *dataset_add_array(DatasetObject *self, PyObject *args) {
    PyObject *img_obj, *mask_obj, *target;
    int dtype, c, h, w, mdtype, norm;
    const char *name;
    if (!PyArg_ParseTuple(args, "OiiiiOiiO!s:add_array", &img_obj, &dtype, &c, &h, &w, &mask_obj,
                          &mdtype, &norm, &PyTuple_Type, &target, &name))
        return NULL;
    unet_target_opts to;
    if (target_opts(target, &to) < 0) return NULL;
    if (dtype < UNET_DTYPE_U8 || dtype > UNET_DTYPE_F32 || mdtype < UNET_DTYPE_U8 ||
        mdtype > UNET_DTYPE_F32)
        return PyErr_Format(PyExc_ValueError, "unknown dtype codes %d, %d", dtype, mdtype);
    Py_ssize_t ib = plane_bytes(c, h, w, unet_dtype_size((unet_dtype)dtype));
    Py_ssize_t mb = plane_bytes(1, h, w, unet_dtype_size((unet_dtype)mdtype));
    if (ib < 0 || mb < 0) return NULL;
    Py_buffer ibuf, mbuf;
    if (get_buffer(img_obj, &ibuf, 0, ib, "image", 0) < 0) return NULL;
    if (get_buffer(mask_obj, &mbuf, 0, mb, "mask", 0) < 0) {
        release(&ibuf);
        return NULL;
    }
    unet_image im = {.w = w, .h = h, .c = c, .dtype = (unet_dtype)dtype, .data = ibuf.buf};
    unet_image mk = {.w = w, .h = h, .c = 1, .dtype = (unet_dtype)mdtype, .data = mbuf.buf};
    unet_status s;
    Py_BEGIN_ALLOW_THREADS
    s = unet_dataset_add_image(self->ctx, self->ds, &im, &mk, (unet_norm)norm, &to, name);
    Py_END_ALLOW_THREADS
    release(&ibuf);
    release(&mbuf);
    return s == UNET_STATUS_OK ? none() : raise_status(self->ctx, s);
}

/* add_file(image_path, mask_path, page, channel_axis, channels or None, norm, target, name) */
static PyObject *dataset_add_file(DatasetObject *self, PyObject *args) {
    PyObject *ip, *mp, *target;
    int page, norm;
    const char *name, *channels;
    unet_image_opts io = unet_image_defaults();
    if (!PyArg_ParseTuple(args, "O&O&iiziO!s:add_file", PyUnicode_FSConverter, &ip,
                          PyUnicode_FSConverter, &mp, &page, &io.channel_axis, &channels, &norm,
                          &PyTuple_Type, &target, &name))
        return NULL;
    unet_target_opts to;
    unet_status s = UNET_STATUS_OK;
    if (target_opts(target, &to) == 0) {
        Py_BEGIN_ALLOW_THREADS
        s = unet_dataset_add_file_with(self->ctx, self->ds, PyBytes_AS_STRING(ip),
                                       PyBytes_AS_STRING(mp), page, &io, channels,
                                       (unet_norm)norm, &to, name);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(ip);
    Py_DECREF(mp);
    if (PyErr_Occurred()) return NULL;
    return s == UNET_STATUS_OK ? none() : raise_status(self->ctx, s);
}

/* holdout(fraction, files, seed) -> (kind, Dataset or None): files is a list of ints (the file
 * each image came from) or None. */
static PyObject *dataset_holdout(DatasetObject *self, PyObject *args) {
    double fraction;
    PyObject *files;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "dOK:holdout", &fraction, &files, &seed)) return NULL;
    const int n = unet_dataset_count(self->ds);
    int *file = NULL;
    if (files != Py_None) {
        if (!PyList_Check(files) || PyList_GET_SIZE(files) != n)
            return PyErr_Format(PyExc_ValueError, "holdout: files must be a list of %d ints", n);
        file = PyMem_Malloc(sizeof(int) * (size_t)(n ? n : 1));
        if (!file) return PyErr_NoMemory();
        for (int i = 0; i < n; i++) {
            file[i] = (int)PyLong_AsLong(PyList_GET_ITEM(files, i));
            if (file[i] == -1 && PyErr_Occurred()) {
                PyMem_Free(file);
                return NULL;
            }
        }
    }
    DatasetObject *val = dataset_new();
    int kind = 0;
    unet_status s = val ? unet_dataset_holdout(self->ctx, self->ds, file, fraction,
                                               UNET_HOLDOUT_MIN_ROWS, (uint64_t)seed, &kind,
                                               &val->ds)
                        : UNET_STATUS_NOMEM;
    PyMem_Free(file);
    if (!val) return NULL;
    if (s != UNET_STATUS_OK) {
        Py_DECREF(val);
        return raise_status(self->ctx, s);
    }
    if (!val->ds) {
        Py_DECREF(val);
        return Py_BuildValue("(iO)", kind, Py_None);
    }
    return Py_BuildValue("(iN)", kind, (PyObject *)val);
}

/* plan(base, batch, tile, epochs, steps, depth, minutes) -> (base, batch, tile, epochs, steps,
 * planned): the default recipe's sizes and length for what is 0 (unet_plan_run, with this set's
 * images for the tile). */
static PyObject *dataset_plan(DatasetObject *self, PyObject *args) {
    unet_plan p = {0};
    long long steps;
    if (!PyArg_ParseTuple(args, "iiiiLid:plan", &p.base, &p.batch, &p.tile, &p.epochs, &steps,
                          &p.depth, &p.minutes))
        return NULL;
    p.steps = (long)steps;
    unet_status s = unet_plan_run(self->ctx, self->ds, &p);
    if (s != UNET_STATUS_OK) return raise_status(self->ctx, s);
    return Py_BuildValue("(iiiiLi)", p.base, p.batch, p.tile, p.epochs, (long long)p.steps,
                         p.planned);
}

static PyMethodDef dataset_methods[] = {
    {"plan", (PyCFunction)dataset_plan, METH_VARARGS, "the default recipe's sizes (unet_plan_run)"},
    {"count", (PyCFunction)dataset_count, METH_NOARGS, "images in the set"},
    {"add_array", (PyCFunction)dataset_add_array, METH_VARARGS, "add an image and its mask"},
    {"add_file", (PyCFunction)dataset_add_file, METH_VARARGS, "add a page of a file pair"},
    {"holdout", (PyCFunction)dataset_holdout, METH_VARARGS, "move the held-back set out"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DatasetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "unet._core.Dataset",
    .tp_basicsize = sizeof(DatasetObject),
    .tp_dealloc = (destructor)dataset_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a training set (unet_dataset)",
    .tp_methods = dataset_methods,
};

int train_add_types(PyObject *mod) {
    if (PyType_Ready(&DatasetType) < 0) return -1;
    if (PyModule_AddStringConstant(mod, "PLAN_SEPARATE_NOTE", UNET_PLAN_SEPARATE_NOTE) < 0)
        return -1;
    Py_INCREF(&DatasetType);
    return PyModule_AddObject(mod, "Dataset", (PyObject *)&DatasetType);
}

/* ---------------------------------------------------------------------------------------
 * Options: a dict whose absent or None entries keep unet_train_defaults()
 * ------------------------------------------------------------------------------------- */

static PyObject *entry(PyObject *d, const char *key) {
    PyObject *v = PyDict_GetItemString(d, key);
    return v == Py_None ? NULL : v;
}

static int opt_double(PyObject *d, const char *key, double *dst) {
    PyObject *v = entry(d, key);
    if (!v) return 0;
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s: expected a number", key);
        return -1;
    }
    *dst = x;
    return 0;
}

static int opt_long(PyObject *d, const char *key, long lo, long hi, long *dst) {
    PyObject *v = entry(d, key);
    if (!v) return 0;
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s: expected an integer", key);
        return -1;
    }
    if (x < lo || x > hi) {
        PyErr_Format(PyExc_ValueError, "%s: %ld is out of range", key, x);
        return -1;
    }
    *dst = x;
    return 0;
}

static int opt_int(PyObject *d, const char *key, int *dst) {
    long x = *dst;
    if (opt_long(d, key, INT_MIN, INT_MAX, &x) < 0) return -1;
    *dst = (int)x;
    return 0;
}

static const char *opt_str(PyObject *d, const char *key) {
    PyObject *v = entry(d, key);
    return v && PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
}

/* The names, then the numbers, as unet train reads its options (cmd_train.c). */
static int parse_opts(unet_ctx *ctx, PyObject *d, unet_train_opts *o) {
    *o = unet_train_defaults();
    const char *loss = opt_str(d, "loss"), *optim = opt_str(d, "optimizer");
    const char *aug = opt_str(d, "augment"), *sched = opt_str(d, "schedule");
    const char *red = opt_str(d, "loss_reduction"), *prec = opt_str(d, "precision");
    unet_status s = loss ? unet_loss_parse(ctx, loss, &o->step.loss) : UNET_STATUS_OK;
    if (s == UNET_STATUS_OK && optim) s = unet_optim_parse(ctx, optim, &o->optim);
    if (s == UNET_STATUS_OK && aug) s = unet_augment_parse(ctx, aug, &o->augment);
    if (s == UNET_STATUS_OK && sched) s = unet_schedule_parse(ctx, sched, &o->schedule.kind);
    if (s == UNET_STATUS_OK && prec) s = unet_precision_parse(ctx, prec, &o->precision);
    if (s != UNET_STATUS_OK) {
        raise_status(ctx, s);
        return -1;
    }
    if (red && strcmp(red, "mean") != 0 && strcmp(red, "sum") != 0) {
        raise_msg(UNET_STATUS_ARG, "loss_reduction: expected 'mean' or 'sum'");
        return -1;
    }
    if (red && strcmp(red, "sum") == 0) o->step.reduction = UNET_REDUCTION_SUM;
    PyObject *ms = entry(d, "milestones");
    if (ms) {
        PyObject *seq = PySequence_Fast(ms, "milestones: expected a list of fractions");
        if (!seq) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        if (n > UNET_MAX_MILESTONES) {
            Py_DECREF(seq);
            raise_msg(UNET_STATUS_ARG, "milestones: more than 8");
            return -1;
        }
        o->schedule.n_milestones = (int)n;
        for (Py_ssize_t i = 0; i < n; i++)
            o->schedule.milestones[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        Py_DECREF(seq);
        if (PyErr_Occurred()) return -1;
    }
    long warmup = 0, steps = 0, save_every = 0;
    int nesterov = 0, guard = 1;
    if (opt_double(d, "lr", &o->optim.lr) < 0 ||
        opt_double(d, "momentum", &o->optim.momentum) < 0 ||
        opt_double(d, "weight_decay", &o->optim.weight_decay) < 0 ||
        opt_int(d, "nesterov", &nesterov) < 0 || opt_double(d, "clip", &o->step.clip_norm) < 0 ||
        opt_long(d, "warmup", 0, UNET_MAX_STEPS, &warmup) < 0 ||
        opt_int(d, "max_rollbacks", &o->guard.max_rollbacks) < 0 ||
        opt_double(d, "rollback_lr", &o->guard.lr_factor) < 0 || opt_int(d, "guard", &guard) < 0 ||
        opt_double(d, "ema", &o->ema) < 0 || opt_int(d, "batch", &o->batch) < 0 ||
        opt_int(d, "tile", &o->tile) < 0 || opt_int(d, "epochs", &o->epochs) < 0 ||
        opt_long(d, "steps", LONG_MIN, LONG_MAX, &steps) < 0 || opt_int(d, "seed", &o->seed) < 0 ||
        opt_double(d, "minutes", &o->minutes) < 0 ||
        opt_int(d, "snapshot_every", &o->snapshot_every) < 0 ||
        opt_long(d, "save_every", LONG_MIN, LONG_MAX, &save_every) < 0 ||
        opt_double(d, "save_minutes", &o->save_minutes) < 0 ||
        opt_int(d, "workers", &o->workers) < 0)
        return -1;
    o->optim.nesterov = nesterov;
    o->schedule.warmup = warmup;
    o->guard.detect = guard;
    o->steps = steps;
    o->save_every = save_every;
    s = unet_train_check(ctx, o);
    if (s != UNET_STATUS_OK) raise_status(ctx, s);
    return s == UNET_STATUS_OK ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------
 * The run
 * ------------------------------------------------------------------------------------- */

struct run {
    PyObject *callback;                 /* called with each event's dict; may be None */
    PyObject *etype, *evalue, *etb;     /* an exception raised in it (or a signal's) */
    int       asked;                    /* the callback asked to stop */
};

static int set_item(PyObject *d, const char *key, PyObject *v) {
    if (!v) return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *event_dict(const unet_train_event *e) {
    static const char *kinds[] = {"start", "step", "epoch"};
    char row[512];
    unet_train_log_row(e, row, sizeof row);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    int bad = set_item(d, "kind", PyUnicode_FromString(kinds[e->kind])) |
              set_item(d, "step", PyLong_FromLong(e->step)) |
              set_item(d, "epoch", PyLong_FromLong(e->epoch)) |
              set_item(d, "total", PyLong_FromLong(e->total)) |
              set_item(d, "loss", PyFloat_FromDouble(e->loss)) |
              set_item(d, "lr", PyFloat_FromDouble(e->lr)) |
              set_item(d, "grad_norm", PyFloat_FromDouble(e->grad_norm)) |
              set_item(d, "elapsed", PyFloat_FromDouble(e->elapsed)) |
              set_item(d, "event", PyUnicode_FromString(e->event)) |
              set_item(d, "warning", PyUnicode_FromString(e->warning)) |
              set_item(d, "row", PyUnicode_FromString(row));
    if (!bad && e->validated)
        bad = set_item(d, "val_loss", PyFloat_FromDouble(e->val_loss)) |
              set_item(d, "val_dice", PyFloat_FromDouble(e->val_dice)) |
              set_item(d, "val_iou", PyFloat_FromDouble(e->val_iou)) |
              set_item(d, "val_pixel_error", PyFloat_FromDouble(e->val_pixel_error)) |
              set_item(d, "val_rand_error", PyFloat_FromDouble(e->val_rand_error));
    if (bad) Py_CLEAR(d);
    return d;
}

/* The loop's callback (on the training thread, without the GIL). */
static int on_event(const unet_train_event *e, void *user) {
    struct run *r = user;
    PyGILState_STATE g = PyGILState_Ensure();
    if (!r->etype && PyErr_CheckSignals() == 0 && r->callback != Py_None) {
        PyObject *d = event_dict(e);
        PyObject *res = d ? PyObject_CallFunctionObjArgs(r->callback, d, NULL) : NULL;
        int truth = res ? PyObject_IsTrue(res) : -1;
        Py_XDECREF(res);
        Py_XDECREF(d);
        if (truth > 0) r->asked = 1;
    }
    if (!r->etype && PyErr_Occurred()) PyErr_Fetch(&r->etype, &r->evalue, &r->etb);
    int stop = r->asked || r->etype;
    PyGILState_Release(g);
    return stop;
}

static PyObject *info_dict(const unet_train_info *in, unet_status s, const struct run *r) {
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:l,s:l,s:l,s:i,s:i,s:l,s:l,s:l,s:i,s:O,s:O,s:d,s:s,s:d}",
                         "status", r->asked && s == UNET_STATUS_INTERRUPTED ? "stopped"
                                   : s == UNET_STATUS_OK                    ? "done"
                                                                            : unet_status_str(s),
                         "tile", in->tile, "out_h", in->out_h, "out_w", in->out_w, "per_epoch",
                         in->per_epoch, "total", in->total, "first_step", in->first_step,
                         "n_train", in->n_train, "n_val", in->n_val, "step", in->step,
                         "saved_step", in->saved_step, "good_step", in->good_step, "rollbacks",
                         in->rollbacks, "budget_over", in->budget_over ? Py_True : Py_False,
                         "diverged", in->diverged ? Py_True : Py_False, "best", in->best,
                         "selected", in->selected, "data_seconds", in->data_seconds);
}

/* train(train, val, opts, callback, threads) -> info dict.  opts: see parse_opts, plus the
 * files "out", "last", "resume_out" and "resume" (the name of the checkpoint the model was
 * loaded from: continue its run).  Afterwards the model holds the weights validation scored
 * (the moving average's when kept, which is then dropped). */
PyObject *model_train(ModelObject *self, PyObject *args) {
    DatasetObject *train;
    PyObject *val, *opts, *callback;
    int threads;
    if (!PyArg_ParseTuple(args, "O!OO!Oi:train", &DatasetType, &train, &val, &PyDict_Type, &opts,
                          &callback, &threads))
        return NULL;
    if (val != Py_None && !PyObject_TypeCheck(val, &DatasetType))
        return PyErr_Format(PyExc_TypeError, "train: val must be a Dataset or None");
    const char *files[3] = {opt_str(opts, "out"), opt_str(opts, "last"), opt_str(opts, "resume_out")};
    const char *resume = opt_str(opts, "resume");
    if (PyErr_Occurred()) return NULL;
    model_lock(self);
    unet_ctx *ctx = self->ctx;
    unet_train_opts o;
    PyObject *result = NULL;
    unet_trainer *t = NULL;
    struct run r = {.callback = callback};
    if (parse_opts(ctx, opts, &o) < 0) goto done;
    unet_status s = set_threads(self, threads);
    if (s == UNET_STATUS_OK && resume) s = unet_train_resume(ctx, self->m, resume, &o);
    o.out = files[0], o.last = files[1], o.resume_out = files[2];
    const unet_dataset *vds = val == Py_None ? NULL : ((DatasetObject *)val)->ds;
    Py_BEGIN_ALLOW_THREADS
    if (s == UNET_STATUS_OK) s = unet_trainer_create(ctx, self->m, train->ds, vds, &o, &t);
    if (s == UNET_STATUS_OK) s = unet_trainer_run(ctx, t, on_event, &r);
    Py_END_ALLOW_THREADS
    if (r.etype) {
        PyErr_Restore(r.etype, r.evalue, r.etb);
    } else if (s != UNET_STATUS_OK && !(s == UNET_STATUS_INTERRUPTED && r.asked)) {
        /* The exception carries what the run did as .info (a divergence's last good step). */
        raise_status(ctx, s);
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *info = t ? info_dict(unet_trainer_info(t), s, &r) : none();
        if (info && value) PyObject_SetAttrString(value, "info", info);
        Py_XDECREF(info);
        PyErr_Restore(type, value, tb);
    } else {
        result = info_dict(unet_trainer_info(t), s, &r);
        if (result && unet_model_ema_decay(self->m) > 0 &&
            unet_model_ema_swap(ctx, self->m) == UNET_STATUS_OK)
            unet_model_ema_enable(ctx, self->m, 0);
    }
done:
    unet_trainer_free(t);
    model_unlock(self);
    return result;
}

/* resume_info(name) -> (seed, batch, tile, step) of the run a resumable checkpoint
 * continues (its train.* metadata, checked). */
PyObject *model_resume_info(ModelObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s:resume_info", &name)) return NULL;
    model_lock(self);
    unet_train_opts o = unet_train_defaults();
    unet_status s = unet_train_resume(self->ctx, self->m, name, &o);
    const char *step = unet_model_meta(self->m, "train.step");
    PyObject *r = s == UNET_STATUS_OK ? Py_BuildValue("(iiil)", o.seed, o.batch, o.tile,
                                                      strtol(step ? step : "0", NULL, 10))
                                      : raise_status(self->ctx, s);
    model_unlock(self);
    return r;
}

/* holdout_plan(rows, files, fraction, min_rows, seed) -> (kind, held, band_rows): rows and
 * files lists of ints (files may be None), as unet_holdout_plan plans it. */
PyObject *core_holdout_plan(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *rows_obj, *files_obj;
    double fraction;
    int min_rows;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "O!OdiK:holdout_plan", &PyList_Type, &rows_obj, &files_obj,
                          &fraction, &min_rows, &seed))
        return NULL;
    const Py_ssize_t n = PyList_GET_SIZE(rows_obj);
    if (n > INT_MAX / 4 || (files_obj != Py_None &&
                            (!PyList_Check(files_obj) || PyList_GET_SIZE(files_obj) != n)))
        return PyErr_Format(PyExc_ValueError, "holdout_plan: files must be None or a list of "
                                              "%zd ints", n);
    int *buf = PyMem_Malloc(sizeof(int) * (size_t)(4 * n + 1));
    if (!buf) return PyErr_NoMemory();
    int *rows = buf, *file = buf + n, *held = buf + 2 * n, *band = buf + 3 * n, kind = 0;
    for (Py_ssize_t i = 0; i < n && !PyErr_Occurred(); i++) {
        rows[i] = (int)PyLong_AsLong(PyList_GET_ITEM(rows_obj, i));
        if (files_obj != Py_None) file[i] = (int)PyLong_AsLong(PyList_GET_ITEM(files_obj, i));
    }
    PyObject *r = NULL;
    unet_ctx *ctx = PyErr_Occurred() ? NULL : unet_ctx_create();
    if (ctx) {
        unet_status s = unet_holdout_plan(ctx, (int)n, files_obj == Py_None ? NULL : file, rows,
                                          fraction, min_rows, (uint64_t)seed, &kind, held, band);
        PyObject *h = s == UNET_STATUS_OK ? PyList_New(n) : NULL;
        PyObject *b = h ? PyList_New(n) : NULL;
        for (Py_ssize_t i = 0; b && i < n; i++) {
            PyList_SET_ITEM(h, i, PyBool_FromLong(held[i]));
            PyList_SET_ITEM(b, i, PyLong_FromLong(band[i]));
        }
        if (b) r = Py_BuildValue("(iNN)", kind, h, b);
        else if (s != UNET_STATUS_OK) raise_status(ctx, s);
        else Py_XDECREF(h);
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    unet_ctx_free(ctx);
    PyMem_Free(buf);
    return r;
}

/* One item of plan_from_masks: a path into *bytes and *path (files), else a (mask, dtype, h, w)
 * tuple into *b and *m.  0, or -1 with an exception set. */
static int plan_item(PyObject *item, int files, unet_image *m, Py_buffer *b, PyObject **bytes,
                     const char **path) {
    if (files) {
        if (!PyUnicode_FSConverter(item, bytes)) return -1;
        *path = PyBytes_AS_STRING(*bytes);
        return 0;
    }
    PyObject *obj;
    int dtype, h, w;
    if (!PyArg_ParseTuple(item, "Oiii:plan_from_masks", &obj, &dtype, &h, &w)) return -1;
    if (dtype < UNET_DTYPE_U8 || dtype > UNET_DTYPE_F32) {
        PyErr_Format(PyExc_ValueError, "unknown dtype code %d", dtype);
        return -1;
    }
    Py_ssize_t size = plane_bytes(1, h, w, unet_dtype_size((unet_dtype)dtype));
    if (size < 0 || get_buffer(obj, b, 0, size, "mask", 0) < 0) return -1;
    *m = (unet_image){.w = w, .h = h, .c = 1, .dtype = (unet_dtype)dtype, .data = b->buf};
    return 0;
}

/* plan_from_masks(items, classes, files) -> bool, the default recipe's choice from the masks:
 * items are paths (files true: page 0 of each, unet_plan_from_mask_files) or (mask, dtype, h,
 * w) tuples, h * w samples of a unet_dtype each (unet_plan_from_masks). */
PyObject *core_plan_from_masks(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *list;
    int classes, files;
    if (!PyArg_ParseTuple(args, "O!ip:plan_from_masks", &PyList_Type, &list, &classes, &files))
        return NULL;
    const Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > INT_MAX) return PyErr_Format(PyExc_ValueError, "plan_from_masks: too many masks");
    unet_image *m = PyMem_Calloc((size_t)n + 1, sizeof *m);
    Py_buffer *b = PyMem_Calloc((size_t)n + 1, sizeof *b);
    PyObject **bytes = PyMem_Calloc((size_t)n + 1, sizeof *bytes);
    const char **paths = PyMem_Calloc((size_t)n + 1, sizeof *paths);
    unet_ctx *ctx = m && b && bytes && paths ? unet_ctx_create() : NULL;
    Py_ssize_t got = 0;
    while (ctx && got < n &&
           plan_item(PyList_GET_ITEM(list, got), files, &m[got], &b[got], &bytes[got],
                     &paths[got]) == 0)
        got++;
    PyObject *r = NULL;
    if (!ctx) {
        PyErr_NoMemory();
    } else if (got == n) {
        int separate = 0;
        unet_status s;
        Py_BEGIN_ALLOW_THREADS
        s = files ? unet_plan_from_mask_files(ctx, paths, (int)n, classes, &separate)
                  : unet_plan_from_masks(ctx, m, (int)n, classes, &separate);
        Py_END_ALLOW_THREADS
        r = s == UNET_STATUS_OK ? PyBool_FromLong(separate) : raise_status(ctx, s);
    }
    for (Py_ssize_t i = 0; i < got; i++) {
        release(&b[i]);
        Py_XDECREF(bytes[i]);
    }
    unet_ctx_free(ctx);
    PyMem_Free(m), PyMem_Free(b), PyMem_Free(bytes), PyMem_Free(paths);
    return r;
}

PyObject *core_log_header(PyObject *mod, PyObject *unused) {
    (void)mod, (void)unused;
    return PyUnicode_FromString(unet_train_log_header());
}

/* probe(path) -> True when the file is a checkpoint unet wrote */
PyObject *core_probe(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&:probe", PyUnicode_FSConverter, &path_obj)) return NULL;
    unet_ctx *ctx = unet_ctx_create();
    int is_unet = 0;
    unet_status s = ctx ? unet_model_probe(ctx, PyBytes_AS_STRING(path_obj), &is_unet)
                        : UNET_STATUS_NOMEM;
    Py_DECREF(path_obj);
    PyObject *r = s == UNET_STATUS_OK ? PyBool_FromLong(is_unet)
                  : ctx               ? raise_status(ctx, s)
                                      : PyErr_NoMemory();
    unet_ctx_free(ctx);
    return r;
}
