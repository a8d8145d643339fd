/* _core.h — what the extension's two files share: _core.c (models, prediction, evaluation,
 * images) and _train.c (training sets and the training loop).  Not installed; the symbols are
 * hidden inside the extension's shared object.
 */
#ifndef UNET_PY_CORE_H
#define UNET_PY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "unet.h"

#include <stdbool.h>

#if defined(__GNUC__)
#define CORE_HIDDEN __attribute__((visibility("hidden")))
#else
#define CORE_HIDDEN
#endif

/* A model with its own context and lock (a unet_model and its unet_ctx are not shared
 * between threads): every call that computes holds the lock and releases the GIL. */
typedef struct {
    PyObject_HEAD
    unet_model        *m;
    unet_ctx          *ctx;
    PyThread_type_lock lock;
    int                default_threads;
} ModelObject;

/* unet's status and message as an exception of the matching unet.Error subclass; NULL. */
CORE_HIDDEN PyObject *raise_msg(unet_status s, const char *msg);
CORE_HIDDEN PyObject *raise_status(unet_ctx *ctx, unet_status s);
CORE_HIDDEN PyObject *none(void);
/* A C-contiguous buffer of exactly `bytes` bytes (writable when asked) from obj; None gives an
 * empty view (b->obj NULL) when allow_none.  Returns 0 or -1 with an exception set. */
CORE_HIDDEN int get_buffer(PyObject *obj, Py_buffer *b, int writable, Py_ssize_t bytes,
                           const char *what, int allow_none);
CORE_HIDDEN void release(Py_buffer *b);
/* The size of c * h * w samples of `elem` bytes, or -1 (ValueError set). */
CORE_HIDDEN Py_ssize_t plane_bytes(long long c, long long h, long long w, size_t elem);
CORE_HIDDEN ModelObject *model_new(void);
/* Takes the model's lock, waiting without the GIL. */
CORE_HIDDEN void model_lock(ModelObject *self);
CORE_HIDDEN void model_unlock(ModelObject *self);
/* threads: 0 = the default; else 1..1024.  Needs the lock. */
CORE_HIDDEN unet_status set_threads(ModelObject *self, int threads);

/* _train.c: Model.train and Model.resume_info, the module's dataset, log_header and probe,
 * and the Dataset type; _core.c: load_training. */
CORE_HIDDEN PyObject *model_train(ModelObject *self, PyObject *args);
CORE_HIDDEN PyObject *model_resume_info(ModelObject *self, PyObject *args);
CORE_HIDDEN PyObject *core_dataset(PyObject *mod, PyObject *args);
CORE_HIDDEN PyObject *core_load_training(PyObject *mod, PyObject *args);
CORE_HIDDEN PyObject *core_log_header(PyObject *mod, PyObject *unused);
CORE_HIDDEN PyObject *core_probe(PyObject *mod, PyObject *args);
CORE_HIDDEN PyObject *core_holdout_plan(PyObject *mod, PyObject *args);
CORE_HIDDEN PyObject *core_plan_from_masks(PyObject *mod, PyObject *args);
CORE_HIDDEN int train_add_types(PyObject *mod);

#define TRAIN_MODEL_METHODS                                                                    \
    {"train", (PyCFunction)model_train, METH_VARARGS, "see unet.train"},                      \
    {"resume_info", (PyCFunction)model_resume_info, METH_VARARGS,                            \
     "(seed, batch, tile, step) of the run a checkpoint continues"},
#define TRAIN_CORE_METHODS                                                                     \
    {"dataset", core_dataset, METH_VARARGS, "dataset(channels) -> an empty training set"},    \
    {"load_training", core_load_training, METH_VARARGS, "a resumable checkpoint -> Model"},   \
    {"log_header", core_log_header, METH_NOARGS, "the training log's header line"},          \
    {"probe", core_probe, METH_VARARGS, "whether a file is a checkpoint unet wrote"},       \
    {"holdout_plan", core_holdout_plan, METH_VARARGS, "unet_holdout_plan"},                   \
    {"plan_from_masks", core_plan_from_masks, METH_VARARGS,                                  \
     "unet_plan_from_masks, unet_plan_from_mask_files"},

#endif /* UNET_PY_CORE_H */
