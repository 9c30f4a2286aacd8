/* quantlight_native: the native core behind the CPython C API, vectorcall only (METH_FASTCALL), so that one
 * text -> one label costs one call and no argument tuple. No numpy: texts are str (or bytes), images any
 * buffer of uint8 pixels.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "quantlight.h"

typedef struct {
    PyObject_HEAD
    ql_model model;
    void *image;     /* the model image (PyMem_RawMalloc: aligned; the core keeps pointers into it) */
    void *workspace; /* zero-filled once; every call leaves it so */
    float *logits;
} Model;

/* A text argument as UTF-8 bytes and how to decode them: a str (lone surrogates through "surrogatepass"), or
 * bytes (invalid UTF-8 as U+FFFD). *hold keeps a temporary encoding alive. */
static int text_bytes(PyObject *text, const char **data, Py_ssize_t *size, int *decoding, PyObject **hold) {
    *hold = NULL;
    if (PyUnicode_Check(text)) {
        *data = PyUnicode_AsUTF8AndSize(text, size);
        *decoding = QL_UTF8;
        if (*data) return 0;
        PyErr_Clear();
        *hold = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
        if (!*hold) return -1;
        *decoding = QL_SURROGATES;
        *data = PyBytes_AS_STRING(*hold);
        *size = PyBytes_GET_SIZE(*hold);
        return 0;
    }
    if (PyBytes_Check(text)) {
        *data = PyBytes_AS_STRING(text);
        *size = PyBytes_GET_SIZE(text);
        *decoding = QL_UTF8;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "Expected texts as str, got a %.60s.", Py_TYPE(text)->tp_name);
    return -1;
}

static int predict_one(Model *self, PyObject *text, float *logits) {
    const char *data;
    Py_ssize_t size;
    int decoding, label;
    PyObject *hold;
    if (text_bytes(text, &data, &size, &decoding, &hold)) return -1;
    label = ql_predict_text(&self->model, self->workspace, data, (size_t)size, decoding, logits);
    Py_XDECREF(hold);
    return label;
}

static int one_arg(Py_ssize_t nargs, const char *name) {
    if (nargs == 1) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%zd given)", name, nargs);
    return -1;
}

static int text_model(Model *self) {
    if (self->model.input_kind == 0) return 0;
    PyErr_SetString(PyExc_ValueError, "This model reads images, not texts.");
    return -1;
}

/* predict(text) -> class index: the batch-1 call. */
static PyObject *Model_predict(Model *self, PyObject *const *args, Py_ssize_t nargs) {
    int label;
    if (one_arg(nargs, "predict") || text_model(self)) return NULL;
    label = predict_one(self, args[0], NULL);
    return label < 0 ? NULL : PyLong_FromLong(label);
}

/* predict_many(texts) -> list of class indices. */
static PyObject *Model_predict_many(Model *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *seq, *out;
    Py_ssize_t i, n;
    if (one_arg(nargs, "predict_many") || text_model(self)) return NULL;
    if (PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_ValueError, "Expected a list of texts, got one str: wrap it in a list.");
        return NULL;
    }
    seq = PySequence_Fast(args[0], "Expected a list of texts.");
    if (!seq) return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    out = PyList_New(n);
    for (i = 0; out && i < n; i++) {
        int label = predict_one(self, PySequence_Fast_GET_ITEM(seq, i), NULL);
        if (label < 0) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, PyLong_FromLong(label));
    }
    Py_DECREF(seq);
    return out;
}

static PyObject *logits_list(Model *self) {
    uint32_t c;
    PyObject *row = PyList_New(self->model.num_classes);
    for (c = 0; row && c < self->model.num_classes; c++) PyList_SET_ITEM(row, c, PyFloat_FromDouble(self->logits[c]));
    return row;
}

/* logits(texts) -> list of float32 logit lists. */
static PyObject *Model_logits(Model *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *seq, *out;
    Py_ssize_t i, n;
    if (one_arg(nargs, "logits") || text_model(self)) return NULL;
    seq = PySequence_Fast(args[0], "Expected a list of texts.");
    if (!seq) return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    out = PyList_New(n);
    for (i = 0; out && i < n; i++) {
        PyObject *row;
        if (predict_one(self, PySequence_Fast_GET_ITEM(seq, i), self->logits) < 0 || !(row = logits_list(self)))
            Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, row);
    }
    Py_DECREF(seq);
    return out;
}

/* images(pixels, with_logits) -> class indices (or logit lists) of a buffer of whole images, input_dim uint8
 * pixels each. */
static PyObject *Model_images(Model *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    PyObject *out;
    Py_ssize_t i, n, width = (Py_ssize_t)self->model.input_dim;
    int with_logits;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "images() takes a buffer of pixels and a bool");
        return NULL;
    }
    if (self->model.input_kind != 1) {
        PyErr_SetString(PyExc_ValueError, "This model reads texts, not images.");
        return NULL;
    }
    with_logits = PyObject_IsTrue(args[1]);
    if (with_logits < 0 || PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (view.itemsize != 1 || view.len % width) {
        PyErr_Format(PyExc_ValueError, "Expected uint8 images of %zd pixels each, got %zd bytes.", width, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    n = view.len / width;
    out = PyList_New(n);
    for (i = 0; out && i < n; i++) {
        const uint8_t *pixels = (const uint8_t *)view.buf + i * width;
        int label = ql_predict_image(&self->model, self->workspace, pixels, with_logits ? self->logits : NULL);
        PyObject *item = with_logits ? logits_list(self) : PyLong_FromLong(label);
        if (!item) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, item);
    }
    PyBuffer_Release(&view);
    return out;
}

static void add_token(void *context, const char *token, size_t size, size_t full) {
    PyObject *list = (PyObject *)context, *s;
    (void)full;
    s = PyUnicode_DecodeUTF8(token, (Py_ssize_t)size, "surrogatepass");
    if (!s || PyList_Append(list, s)) PyErr_Clear();
    Py_XDECREF(s);
}

/* tokens(text) -> the featurizer's tokens (lowercased as the model lowercases), for tests: tokens are cut at
 * 1,024 bytes. */
static PyObject *Model_tokens(Model *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *data;
    Py_ssize_t size;
    int decoding;
    PyObject *hold, *list;
    if (one_arg(nargs, "tokens") || text_model(self)) return NULL;
    if (text_bytes(args[0], &data, &size, &decoding, &hold)) return NULL;
    list = PyList_New(0);
    if (list) ql_tokens(&self->model, data, (size_t)size, decoding, add_token, list);
    Py_XDECREF(hold);
    return list;
}

/* features(text) -> (term columns, float64 values): the Python featurizer's row(text). */
static PyObject *Model_features(Model *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *data;
    Py_ssize_t size;
    int decoding;
    uint32_t n, i, d = self->model.input_dim;
    PyObject *hold, *ids, *values, *out = NULL;
    uint32_t *id_buf;
    double *value_buf;
    if (one_arg(nargs, "features") || text_model(self)) return NULL;
    if (text_bytes(args[0], &data, &size, &decoding, &hold)) return NULL;
    id_buf = PyMem_Malloc(d * sizeof *id_buf);
    value_buf = PyMem_Malloc(d * sizeof *value_buf);
    if (id_buf && value_buf) {
        n = ql_features(&self->model, self->workspace, data, (size_t)size, decoding, id_buf, value_buf);
        ids = PyList_New(n);
        values = PyList_New(n);
        for (i = 0; ids && values && i < n; i++) {
            PyList_SET_ITEM(ids, i, PyLong_FromUnsignedLong(id_buf[i]));
            PyList_SET_ITEM(values, i, PyFloat_FromDouble(value_buf[i]));
        }
        if (ids && values) out = PyTuple_Pack(2, ids, values);
        Py_XDECREF(ids);
        Py_XDECREF(values);
    } else PyErr_NoMemory();
    PyMem_Free(id_buf);
    PyMem_Free(value_buf);
    Py_XDECREF(hold);
    return out;
}

static void Model_dealloc(Model *self) {
    PyMem_RawFree(self->image);
    PyMem_Free(self->workspace);
    PyMem_Free(self->logits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Model_get(Model *self, void *which) {
    const ql_model *m = &self->model;
    switch ((int)(Py_intptr_t)which) {
    case 0: return PyLong_FromUnsignedLong(m->num_classes);
    case 1: return PyLong_FromUnsignedLong(m->input_dim);
    case 2: return PyUnicode_FromString(m->input_kind == 0 ? "text" : "image");
    case 3: return PyLong_FromSize_t(ql_workspace_bytes(m));
    default: {
        uint32_t i;
        PyObject *labels = PyList_New(m->num_classes);
        for (i = 0; labels && i < m->num_classes; i++) {
            size_t size;
            const char *label = ql_label(m, i, &size);
            PyObject *s = PyUnicode_DecodeUTF8(label, (Py_ssize_t)size, "replace");
            if (!s) {
                Py_CLEAR(labels);
                break;
            }
            PyList_SET_ITEM(labels, i, s);
        }
        return labels;
    }
    }
}

static PyMethodDef Model_methods[] = {
    {"predict", (PyCFunction)(void (*)(void))Model_predict, METH_FASTCALL, "predict(text) -> class index"},
    {"predict_many", (PyCFunction)(void (*)(void))Model_predict_many, METH_FASTCALL, "predict_many(texts) -> indices"},
    {"logits", (PyCFunction)(void (*)(void))Model_logits, METH_FASTCALL, "logits(texts) -> float32 logit lists"},
    {"images", (PyCFunction)(void (*)(void))Model_images, METH_FASTCALL, "images(pixels, with_logits) -> list"},
    {"tokens", (PyCFunction)(void (*)(void))Model_tokens, METH_FASTCALL, "tokens(text) -> list of str"},
    {"features", (PyCFunction)(void (*)(void))Model_features, METH_FASTCALL, "features(text) -> (ids, values)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"num_classes", (getter)Model_get, NULL, "classes", (void *)0},
    {"input_dim", (getter)Model_get, NULL, "input width (terms or pixels)", (void *)1},
    {"input", (getter)Model_get, NULL, "text or image", (void *)2},
    {"workspace_bytes", (getter)Model_get, NULL, "bytes a prediction works in", (void *)3},
    {"labels", (getter)Model_get, NULL, "label names", (void *)4},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quantlight_native.Model",
    .tp_basicsize = sizeof(Model),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A native model: load(image bytes) makes one.",
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
};

static PyObject *Error;

/* A Model around image (taken over: freed with the model), or NULL with Error saying why it is not a model. */
static PyObject *make_model(void *image, size_t size) {
    Model *self = PyObject_New(Model, &ModelType);
    const char *why = NULL;
    if (!self) {
        PyMem_RawFree(image);
        return NULL;
    }
    self->image = image, self->workspace = NULL, self->logits = NULL;
    if (ql_load(&self->model, self->image, size, &why)) {
        Py_DECREF(self);
        PyErr_Format(Error, "not a usable native model: %s", why);
        return NULL;
    }
    self->workspace = PyMem_Calloc(1, ql_workspace_bytes(&self->model) + 8);
    self->logits = PyMem_Malloc(self->model.num_classes * sizeof(float));
    if (!self->workspace || !self->logits) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

/* load(image) -> Model from bytes (copied into memory the core can keep pointers into). */
static PyObject *load(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    void *image;
    (void)module;
    if (one_arg(nargs, "load") || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    image = PyMem_RawMalloc(view.len ? (size_t)view.len : 1);
    if (image) memcpy(image, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return image ? make_model(image, (size_t)view.len) : PyErr_NoMemory();
}

/* load_file(path) -> Model read straight into its own memory: one copy of the model in the process. */
static PyObject *load_file(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *path;
    FILE *f;
    long size;
    void *image = NULL;
    size_t got = 0;
    (void)module;
    if (one_arg(nargs, "load_file") || !PyUnicode_FSConverter(args[0], &path)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    f = fopen(PyBytes_AS_STRING(path), "rb");
    if (f && !fseek(f, 0, SEEK_END) && (size = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET)) {
        image = PyMem_RawMalloc(size ? (size_t)size : 1);
        if (image) got = fread(image, 1, (size_t)size, f);
        if (image && got != (size_t)size) {
            PyMem_RawFree(image);
            image = NULL;
        }
    }
    if (f) fclose(f);
    Py_END_ALLOW_THREADS
    if (!image) {
        PyErr_Format(Error, "not readable: %s", PyBytes_AS_STRING(path));
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    return make_model(image, got);
}

static PyMethodDef module_methods[] = {
    {"load", (PyCFunction)(void (*)(void))load, METH_FASTCALL, "load(image bytes) -> Model"},
    {"load_file", (PyCFunction)(void (*)(void))load_file, METH_FASTCALL, "load_file(path) -> Model"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "quantlight_native", "Quantlight's native core.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_quantlight_native(void) {
    PyObject *m;
    if (PyType_Ready(&ModelType) < 0) return NULL;
    m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Error = PyErr_NewException("quantlight_native.Error", PyExc_ValueError, NULL);
    if (!Error || PyModule_AddObject(m, "Error", Error) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Error);
    PyModule_AddIntConstant(m, "FORMAT_VERSION", QL_FORMAT_VERSION);
    return m;
}
