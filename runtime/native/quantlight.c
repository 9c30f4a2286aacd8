/* Quantlight's native core (see quantlight.h): the model image's loader, the text featurizer and the layers.
 *
 * Every layer computes what the ONNX artifact's nodes compute, in the same order where the arithmetic is
 * integer or a single rounding: int8 codes multiplied in integers with their zero points, activations quantized
 * per call (DynamicQuantizeLinear) or with calibrated scales (QuantizeLinear, QGemm), rounding half to even.
 */
#include "quantlight.h"

#include <math.h>
#include <string.h>

#if QL_TEXT
#include "unicode_tables.h"
#endif

#define QL_HAS(op) ((QL_OPS >> (op)) & 1u)
#define WHY(message) (QL_SMALL ? "not a usable model" : (message)) /* a small build keeps one message */

#define QL_MAGIC 0x4D4E4C51u /* "QLNM" little-endian */
#define QL_HEADER_WORDS 15u

enum { TEXT = 0, IMAGE = 1 };
enum { WORDS_2 = 1, WORDS_OR_MARK = 2 }; /* (?u)\b\w\w+\b and (?u)\b\w+\b|[^\w\s] */
enum {
    OP_BAG_F32 = 1, OP_BAG_I4, OP_BAG_I8, OP_QUANTIZE, OP_QGEMM, OP_DEQUANTIZE, OP_DYNQ, OP_GEMM, OP_RELU, OP_NBITS
};
enum {
    F_BIAS = 1, F_BIAS_I32 = 2, F_SIGNED = 4, F_PER_CHANNEL = 8, F_ZERO_POINTS = 16, F_STATIC = 32, F_INT8_COMPUTE = 64
};

/* ---------------------------------------------------------------- reading the image, checked */

typedef struct {
    const uint8_t *base;
    size_t size, at;
    const char *error;
} reader;

static const void *take(reader *r, size_t count, size_t item) {
    size_t bytes;
    const void *p;
    if (r->error) return NULL;
    if (item && count > (SIZE_MAX - 3) / item) { r->error = WHY("an array size overflows"); return NULL; }
    bytes = count * item;
    if (bytes > r->size - r->at) { r->error = WHY("truncated: an array runs past the end of the file"); return NULL; }
    p = r->base + r->at;
    r->at += (bytes + 3u) & ~(size_t)3u; /* every field starts 4-byte aligned */
    if (r->at > r->size) r->at = r->size;
    return p;
}

static uint32_t u32(reader *r) {
    const uint32_t *p = (const uint32_t *)take(r, 1, 4);
    return p ? *p : 0;
}

static float f32(reader *r) {
    const float *p = (const float *)take(r, 1, 4);
    return p ? *p : 0.0f;
}

/* The image's checksum: Fletcher's two running sums over its 32-bit words (wrapping), a ^ rotl(b, 16); a word a
 * cycle (a table CRC-32 took 70 ms on a 13 MB model). */
static uint32_t checksum(const uint32_t *words, size_t count) {
    uint32_t a = 0, b = 0;
    while (count--) {
        a += *words++;
        b += a;
    }
    return a ^ ((b << 16) | (b >> 16));
}

static int fail(const char **error, const char *why) {
    if (error) *error = why;
    return QL_ERR_FORMAT;
}

/* Whether a step of this op reads (0) float or (1) uint8 activations, and writes which. */
static int reads_bytes(uint32_t op) { return op == OP_QGEMM || op == OP_DEQUANTIZE; }
static int writes_bytes(const ql_step *s) {
    return s->op == OP_QUANTIZE || (s->op == OP_QGEMM && (s->flags & F_STATIC));
}

static const char *read_step(reader *r, ql_step *s, int first, uint32_t input_kind) {
    uint32_t op = u32(r), k, n, channels, blocks;
    s->op = op;
    s->in_dim = k = u32(r);
    s->out_dim = n = u32(r);
    s->flags = u32(r);
    s->a = u32(r);
    s->b = u32(r);
    s->in_scale = f32(r);
    s->in_zero = (int32_t)u32(r);
    s->out_scale = f32(r);
    s->out_zero = (int32_t)u32(r);
    if (r->error) return r->error;
    if (op < OP_BAG_F32 || op > OP_NBITS) return WHY("unknown layer kind");
    if (!QL_HAS(op) || (op <= OP_BAG_I8 && !QL_TEXT)) return WHY("a layer kind this build leaves out");
    if (k == 0 || n == 0 || k > 0x1000000u || n > 0x100000u) return WHY("a layer size out of range");
    if ((op <= OP_BAG_I8) != (first && input_kind == TEXT)) return WHY("a term bag that is not a text model's first layer");
    if (first && input_kind == IMAGE && op != OP_GEMM && op != OP_DYNQ && op != OP_NBITS && op != OP_QUANTIZE)
        return WHY("an image model's first layer of a kind that cannot read pixels");
    if (s->in_zero < 0 || s->in_zero > 255 || s->out_zero < 0 || s->out_zero > 255) return WHY("a zero point out of range");
    if ((op == OP_QUANTIZE || op == OP_DEQUANTIZE || op == OP_RELU) && k != n) return WHY("an elementwise layer changes width");
    channels = (s->flags & F_PER_CHANNEL) ? n : 1u;
    switch (op) {
    case OP_BAG_F32:
        if (!QL_HAS(OP_BAG_F32)) break;
        s->w = take(r, (size_t)k * n, 4);
        break;
    case OP_BAG_I4:
        if (!QL_HAS(OP_BAG_I4)) break;
        if (n % 2 || s->a < 2 || s->a > 256 || s->a % 2) return WHY("4-bit rows of an odd width or block");
        blocks = (n + s->a - 1) / s->a;
        if (s->b != blocks) return WHY("4-bit rows whose block count does not fit their width");
        s->w = take(r, (size_t)k * (n / 2), 1);
        s->scale = (const float *)take(r, (size_t)k * blocks, 4);
        if (s->flags & F_ZERO_POINTS) s->zero_points = (const uint8_t *)take(r, (size_t)k * ((blocks + 1) / 2), 1);
        break;
    case OP_BAG_I8:
    case OP_DYNQ:
    case OP_QGEMM:
        if (!QL_HAS(OP_BAG_I8) && !QL_HAS(OP_DYNQ) && !QL_HAS(OP_QGEMM)) break;
        s->w = take(r, (size_t)k * n, 1);
        s->scale = (const float *)take(r, channels, 4);
        s->zero = (const int32_t *)take(r, channels, 4);
        if (s->zero)
            for (blocks = 0; blocks < channels; blocks++)
                if (s->zero[blocks] < -128 || s->zero[blocks] > 255) return WHY("a zero point out of range");
        if (op == OP_BAG_I8 && (s->flags & F_STATIC)) s->unit = (const float *)take(r, n, 4);
        break;
    case OP_GEMM:
        if (!QL_HAS(OP_GEMM)) break;
        s->w = take(r, (size_t)k * n, 4);
        break;
    case OP_NBITS:
        if (!QL_HAS(OP_NBITS)) break;
        if (s->a < 16 || s->a > 256 || (s->a & (s->a - 1))) return WHY("a 4-bit block size that is not 16..256");
        blocks = (k + s->a - 1) / s->a;
        if (s->b != blocks) return WHY("4-bit weights whose block count does not fit their inputs");
        s->w = take(r, (size_t)n * blocks * (s->a / 2), 1);
        s->scale = (const float *)take(r, (size_t)n * blocks, 4);
        if (s->flags & F_ZERO_POINTS) s->zero_points = (const uint8_t *)take(r, (size_t)n * ((blocks + 1) / 2), 1);
        break;
    default:
        break;
    }
    if (s->flags & F_BIAS) s->bias = (const float *)take(r, n, 4);
    if (s->flags & F_BIAS_I32) s->bias_i32 = (const int32_t *)take(r, n, 4);
    return r->error;
}

int ql_load(ql_model *m, const void *image, size_t size, const char **error) {
    reader r;
    uint32_t i, d, total, max_bytes = 0;
    int bytes;
    const uint32_t one = 1;
    memset(m, 0, sizeof *m);
    if (*(const uint8_t *)&one != 1) return fail(error, WHY("this machine is big-endian; model files are little-endian"));
    if (!image || ((uintptr_t)image & 3u)) return fail(error, WHY("the model image is not 4-byte aligned"));
    r.base = (const uint8_t *)image;
    r.size = size;
    r.at = 0;
    r.error = NULL;
    if (size < 4 * QL_HEADER_WORDS + 4 || u32(&r) != QL_MAGIC) return fail(error, WHY("not a Quantlight native model"));
    if (u32(&r) != QL_FORMAT_VERSION) return fail(error, WHY("a native model of another format version"));
    total = u32(&r);
    if (total != size || size % 4) return fail(error, WHY("truncated or padded: the size does not match its header"));
    if (checksum((const uint32_t *)image, size / 4 - 1) != ((const uint32_t *)image)[size / 4 - 1])
        return fail(error, WHY("corrupted: the checksum does not match"));
    r.size = size - 4;
    m->input_kind = u32(&r);
    m->input_dim = u32(&r);
    m->num_classes = u32(&r);
    m->num_steps = u32(&r);
    take(&r, 8, 4); /* the ONNX artifact's SHA-256, which the bundle loader checks */
    if (m->input_kind > IMAGE || m->input_dim == 0 || m->input_dim > 0x1000000u) return fail(error, WHY("a bad input"));
    if (m->num_classes < 1 || m->num_classes > 0x10000u) return fail(error, WHY("a bad class count"));
    if (m->num_steps < 1 || m->num_steps > QL_MAX_STEPS) return fail(error, WHY("a bad layer count"));
    m->label_end = (const uint32_t *)take(&r, m->num_classes, 4);
    if (r.error) return fail(error, r.error);
    for (i = 0; i < m->num_classes; i++)
        if (m->label_end[i] < (i ? m->label_end[i - 1] : 0)) return fail(error, WHY("labels out of order"));
    m->label_bytes = (const uint8_t *)take(&r, m->label_end[m->num_classes - 1], 1);
    d = m->input_dim;
    if (m->input_kind == TEXT) {
        if (!QL_TEXT) return fail(error, WHY("a text model: this build leaves the text featurizer out"));
        m->lowercase = u32(&r);
        m->pattern = u32(&r);
        m->tfidf = u32(&r);
        m->sublinear = u32(&r);
        m->l2 = u32(&r);
        m->hash_mask = u32(&r) - 1u;
        if (m->pattern != WORDS_2 && m->pattern != WORDS_OR_MARK) return fail(error, WHY("an unknown token pattern"));
        if ((m->hash_mask + 1u) < d || ((m->hash_mask + 1u) & m->hash_mask)) return fail(error, WHY("a bad term table size"));
        if (m->tfidf) m->idf = (const uint8_t *)take(&r, d, 8);
        m->term_end = (const uint32_t *)take(&r, d, 4);
        if (r.error) return fail(error, r.error);
        for (i = 0; i < d; i++) {
            uint32_t start = i ? m->term_end[i - 1] : 0;
            if (m->term_end[i] < start) return fail(error, WHY("terms out of order"));
            if (m->term_end[i] - start > max_bytes) max_bytes = m->term_end[i] - start;
        }
        m->max_term_bytes = max_bytes;
        m->term_bytes = (const uint8_t *)take(&r, m->term_end[d - 1], 1);
        m->hash = (const uint32_t *)take(&r, (size_t)m->hash_mask + 1u, 4);
        if (r.error) return fail(error, r.error);
        for (i = 0; i <= m->hash_mask; i++)
            if (m->hash[i] > d) return fail(error, WHY("a term table entry out of range"));
    } else {
        m->pixel_scale = f32(&r);
        m->mean = f32(&r);
        m->std = f32(&r);
    }
    bytes = 0;
    m->max_width = m->num_classes;
    for (i = 0; i < m->num_steps; i++) {
        ql_step *s = &m->steps[i];
        const char *why = read_step(&r, s, i == 0, m->input_kind);
        if (why) return fail(error, why);
        if (i == 0 && s->in_dim != d) return fail(error, WHY("the first layer does not read the input's width"));
        if (i > 0 && s->in_dim != m->steps[i - 1].out_dim) return fail(error, WHY("a layer does not read its input's width"));
        if (reads_bytes(s->op) != bytes) return fail(error, WHY("a layer reads activations of another type"));
        bytes = writes_bytes(s);
        if (s->out_dim > m->max_width) m->max_width = s->out_dim;
        if (i > 0 && s->in_dim > m->max_width) m->max_width = s->in_dim;
    }
    if (bytes || m->steps[m->num_steps - 1].out_dim != m->num_classes)
        return fail(error, WHY("the last layer does not give one float logit per class"));
    if (r.at != r.size) return fail(error, WHY("bytes left over after the last layer"));
    return 0;
}

/* ---------------------------------------------------------------- workspace */

typedef struct {
    uint32_t *counts, *ids; /* (D,) per term, zero between calls; the terms present */
    double *values;         /* (D,) the terms' float64 values */
    float *term_weights;    /* (D,) rounded once to float32 */
    uint8_t *token;         /* max_term_bytes + 4 */
    float *fa, *fb;         /* (max_width,) */
    uint8_t *qa, *qb;
    uint32_t *acc;
} workspace;

static size_t up8(size_t n) { return (n + 7u) & ~(size_t)7u; }

static size_t layout(const ql_model *m, void *base, workspace *w) {
    uint8_t *p = (uint8_t *)base;
    size_t at = 0, d = m->input_kind == TEXT ? m->input_dim : 0, mw = m->max_width;
#define PLACE(field, type, count) \
    if (w) w->field = (type *)(void *)(p + at); \
    at += up8((count) * sizeof(type))
    PLACE(counts, uint32_t, d);
    PLACE(ids, uint32_t, d);
    PLACE(values, double, d);
    PLACE(term_weights, float, d);
    PLACE(token, uint8_t, d ? m->max_term_bytes + 4u : 0);
    PLACE(fa, float, mw);
    PLACE(fb, float, mw);
    PLACE(qa, uint8_t, mw);
    PLACE(qb, uint8_t, mw);
    PLACE(acc, uint32_t, mw);
#undef PLACE
    return at;
}

size_t ql_workspace_bytes(const ql_model *m) { return layout(m, NULL, NULL); }

/* ---------------------------------------------------------------- text */
#if QL_TEXT

static int in_ranges(const uint32_t (*table)[2], uint32_t count, uint32_t cp) {
    uint32_t lo = 0, hi = count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (cp < table[mid][0]) hi = mid;
        else if (cp > table[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int is_word(uint32_t cp) {
    return cp < 128 ? ql_ascii[cp] & 1 : in_ranges(ql_word, QL_WORD_RANGES, cp);
}

static int is_space(uint32_t cp) {
    return cp < 128 ? ql_ascii[cp] & 2 : in_ranges(ql_space, QL_SPACE_RANGES, cp);
}

static int is_cased(uint32_t cp) { return cp < 128 ? ql_ascii[cp] & 4 : in_ranges(ql_cased, QL_CASED_RANGES, cp); }

static int is_case_ignorable(uint32_t cp) {
    return cp < 128 ? ql_ascii[cp] & 8 : in_ranges(ql_case_ignorable, QL_CASE_IGNORABLE_RANGES, cp);
}

/* Code point at *at, advancing it; invalid UTF-8 gives U+FFFD for each maximal invalid prefix, as CPython's
 * "replace" handler does. */
static uint32_t decode(const uint8_t *s, size_t size, size_t *at, int decoding) {
    uint32_t c = s[*at], need, cp, lo = 0x80, hi = 0xBF, i;
    (*at)++;
    if (c < 0x80) return c;
    if (c >= 0xC2 && c <= 0xDF) need = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2, cp = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED && decoding != QL_SURROGATES) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3, cp = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0xFFFD;
    for (i = 0; i < need; i++) {
        uint32_t b;
        if (*at >= size) return 0xFFFD;
        b = s[*at];
        if (b < lo || b > hi) return 0xFFFD;
        lo = 0x80, hi = 0xBF;
        cp = (cp << 6) | (b & 0x3F);
        (*at)++;
    }
    return cp;
}

/* Lowercase of cp (one or two code points); `after` is where the text continues (for the final sigma). */
static int lower(uint32_t cp, int prev_cased, const uint8_t *s, size_t size, size_t after, int decoding,
                 uint32_t out[2]) {
    uint32_t lo = 0, hi = QL_LOWER_RANGES, i;
    if (cp < 128) {
        out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
        return 1;
    }
    if (cp == 0x3A3) { /* capital sigma: final (U+03C2) after a cased letter and before none */
        int final = prev_cased;
        while (final && after < size) {
            uint32_t next = decode(s, size, &after, decoding);
            if (!is_case_ignorable(next)) {
                final = !is_cased(next);
                break;
            }
        }
        out[0] = final ? 0x3C2 : 0x3C3;
        return 1;
    }
    for (i = 0; i < QL_LOWER_MULTI; i++)
        if (ql_lower_multi[i][0] == cp) {
            out[0] = ql_lower_multi[i][1];
            out[1] = ql_lower_multi[i][2];
            return 2;
        }
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (cp < (uint32_t)ql_lower[mid][0]) hi = mid;
        else if (cp > (uint32_t)ql_lower[mid][1]) lo = mid + 1;
        else {
            out[0] = (uint32_t)((int32_t)cp + ql_lower[mid][2]);
            return 1;
        }
    }
    out[0] = cp;
    return 1;
}

static size_t encode(uint32_t cp, uint8_t *out) {
    if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { out[0] = (uint8_t)(0xC0 | (cp >> 6)); out[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

typedef struct {
    uint8_t *buf;
    size_t cap, used, full, chars;
    ql_token_fn emit;
    void *context;
    size_t count;
} token_state;

static void flush(token_state *t, int min_chars) {
    if (t->chars >= (size_t)min_chars) {
        t->emit(t->context, (const char *)t->buf, t->used, t->full);
        t->count++;
    }
    t->used = t->full = t->chars = 0;
}

static void append(token_state *t, uint32_t cp) {
    uint8_t bytes[4];
    size_t n = encode(cp, bytes);
    if (t->used + n <= t->cap) {
        memcpy(t->buf + t->used, bytes, n);
        t->used += n;
    }
    t->full += n;
    t->chars++;
}

/* The tokens of the (lowercased) text, as Python's findall of the token pattern on text.lower() finds them. */
static size_t scan(const ql_model *m, const uint8_t *s, size_t size, int decoding, token_state *t) {
    size_t at = 0;
    int prev_cased = 0, min_chars = m->pattern == WORDS_2 ? 2 : 1;
    while (at < size) {
        uint32_t cp = decode(s, size, &at, decoding), low[2];
        int n = 1, i;
        if (m->lowercase) {
            n = lower(cp, prev_cased, s, size, at, decoding, low);
            if (!is_case_ignorable(cp)) prev_cased = is_cased(cp) != 0;
        } else low[0] = cp;
        for (i = 0; i < n; i++) {
            uint32_t c = low[i];
            if (is_word(c)) {
                append(t, c);
                continue;
            }
            if (t->chars) flush(t, min_chars);
            if (m->pattern == WORDS_OR_MARK && !is_space(c)) {
                append(t, c);
                flush(t, 1);
            }
        }
    }
    if (t->chars) flush(t, min_chars);
    return t->count;
}

size_t ql_tokens(const ql_model *m, const char *text, size_t size, int decoding, ql_token_fn emit, void *context) {
    uint8_t buf[1024];
    token_state t;
    if (m->input_kind != TEXT) return 0;
    memset(&t, 0, sizeof t);
    t.buf = buf, t.cap = sizeof buf, t.emit = emit, t.context = context;
    return scan(m, (const uint8_t *)text, size, decoding, &t);
}

static uint32_t fnv1a(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;
    while (n--) h = (h ^ *s++) * 16777619u;
    return h;
}

typedef struct {
    const ql_model *m;
    workspace *w;
    uint32_t present;
} count_state;

static void count_term(void *context, const char *token, size_t size, size_t full) {
    count_state *c = (count_state *)context;
    const ql_model *m = c->m;
    uint32_t at, slot, probes;
    if (full != size) return; /* longer than every term */
    at = fnv1a((const uint8_t *)token, size) & m->hash_mask;
    for (probes = 0; probes <= m->hash_mask; probes++, at = (at + 1u) & m->hash_mask) {
        uint32_t j = m->hash[at], start, end;
        if (!j) return;
        j--;
        start = j ? m->term_end[j - 1] : 0;
        end = m->term_end[j];
        if (end - start == size && !memcmp(m->term_bytes + start, token, size)) {
            slot = c->w->counts[j]++;
            if (!slot) c->w->ids[c->present++] = j;
            return;
        }
    }
}

static void sort_ids(uint32_t *ids, uint32_t n) { /* heapsort: no recursion, no allocation */
    uint32_t start = n / 2, end = n, root, child, tmp;
    if (n < 2) return;
    for (;;) {
        if (start > 0) start--;
        else {
            end--;
            if (end == 0) return;
            tmp = ids[end], ids[end] = ids[0], ids[0] = tmp;
        }
        for (root = start; (child = 2 * root + 1) < end; root = child) {
            if (child + 1 < end && ids[child + 1] > ids[child]) child++;
            if (ids[root] >= ids[child]) break;
            tmp = ids[root], ids[root] = ids[child], ids[child] = tmp;
        }
    }
}

static double idf_at(const ql_model *m, uint32_t j) {
    double v;
    memcpy(&v, m->idf + 8u * (size_t)j, 8);
    return v;
}

/* The text's terms, ascending, their float64 values and float32 weights in the workspace (the counts are
 * zeroed again): the Python featurizer's row(), the same float64 operations in the same order. */
static uint32_t featurize(const ql_model *m, workspace *w, const uint8_t *s, size_t size, int decoding) {
    count_state c;
    token_state t;
    uint32_t l, k, n;
    double sum = 0.0, comp = 0.0, norm;
    c.m = m, c.w = w, c.present = 0;
    memset(&t, 0, sizeof t);
    t.buf = w->token, t.cap = m->max_term_bytes + 4u, t.emit = count_term, t.context = &c;
    scan(m, s, size, decoding, &t);
    n = c.present;
    if (n < 64) { /* insertion sort: most texts hold a few terms */
        for (l = 1; l < n; l++) {
            uint32_t v = w->ids[l];
            for (k = l; k > 0 && w->ids[k - 1] > v; k--) w->ids[k] = w->ids[k - 1];
            w->ids[k] = v;
        }
    } else sort_ids(w->ids, n);
    for (l = 0; l < n; l++) {
        uint32_t j = w->ids[l];
        double v = (double)w->counts[j], x, total;
        w->counts[j] = 0;
        if (m->sublinear) v = log(v) + 1.0;
        if (m->tfidf) v = v * idf_at(m, j);
        w->values[l] = v;
        x = v * v;
        if (l == 0) sum = x; /* sum() starts from the first square exactly (0 + x) */
        else {
            total = sum + x;
            if (QL_COMPENSATED_SUM) comp += fabs(sum) >= fabs(x) ? (sum - total) + x : (x - total) + sum;
            sum = total;
        }
    }
    if (QL_COMPENSATED_SUM && comp != 0.0 && isfinite(comp)) sum += comp;
    if (m->l2 && n) {
        norm = sqrt(sum);
        if (norm != 0.0)
            for (l = 0; l < n; l++) w->values[l] = w->values[l] / norm;
    }
    for (l = 0; l < n; l++) w->term_weights[l] = (float)w->values[l];
    return n;
}

uint32_t ql_features(const ql_model *m, void *work, const char *text, size_t size, int decoding, uint32_t *ids,
                     double *values) {
    workspace w;
    uint32_t n;
    if (m->input_kind != TEXT) return 0;
    layout(m, work, &w);
    n = featurize(m, &w, (const uint8_t *)text, size, decoding);
    memcpy(ids, w.ids, n * sizeof *ids);
    memcpy(values, w.values, n * sizeof *values);
    return n;
}

#endif /* QL_TEXT */

/* ---------------------------------------------------------------- layers */

/* Where a dense layer reads its input: float activations, or the image's pixels through the preprocessing. */
typedef struct {
    const float *f;
    const uint8_t *pixels;
    float scale, mean, std;
} source;

static float at(const source *x, uint32_t k) {
    return x->f ? x->f[k] : ((float)x->pixels[k] / x->scale - x->mean) / x->std; /* the image featurizer's float32 */
}

/* round(v) half to even, clamped to [lo, hi] first (NaN to lo): QuantizeLinear's saturation. */
static int32_t round_clamp(float v, float lo, float hi) {
    if (!(v >= lo)) v = lo;
    if (v > hi) v = hi;
    return (int32_t)nearbyintf(v);
}

static int32_t quantize(float v, float scale, int32_t zero) {
    return round_clamp(v / scale, (float)(0 - zero), (float)(255 - zero)) + zero;
}

/* DynamicQuantizeLinear: the scale and zero point of uint8 codes for values whose range is widened to hold 0. */
static void dynamic_range(const source *x, const float *values, uint32_t n, float *scale, int32_t *zero) {
    float lo = 0.0f, hi = 0.0f, v;
    uint32_t k;
    for (k = 0; k < n; k++) {
        v = values ? values[k] : at(x, k);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    *scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
    *zero = round_clamp(0.0f - lo / *scale, 0.0f, 255.0f);
}

static int32_t code(const ql_step *s, size_t i) {
    return (s->flags & F_SIGNED) ? (int32_t)((const int8_t *)s->w)[i] : (int32_t)((const uint8_t *)s->w)[i];
}

#if QL_TEXT
static void bag(const ql_step *s, workspace *w, uint32_t n, float *out) {
    uint32_t h, l, H = s->out_dim, blocks = s->b;
    const float *tw = w->term_weights;
    if (s->op == OP_BAG_F32 || s->op == OP_BAG_I4) {
        for (h = 0; h < H; h++) out[h] = 0.0f;
        for (l = 0; l < n; l++) {
            size_t j = w->ids[l];
            if (s->op == OP_BAG_F32) {
                const float *row = (const float *)s->w + j * H;
                for (h = 0; h < H; h++) out[h] += tw[l] * row[h];
            } else { /* GatherBlockQuantized: (code - zero point) * the block's scale */
                const uint8_t *row = (const uint8_t *)s->w + j * (H / 2);
                const float *scales = s->scale + j * blocks;
                for (h = 0; h < H; h++) {
                    uint32_t blk = h / s->a;
                    int32_t zp = 8, q = (row[h / 2] >> (4 * (h % 2))) & 15;
                    if (s->zero_points) zp = (s->zero_points[j * ((blocks + 1) / 2) + blk / 2] >> (4 * (blk % 2))) & 15;
                    out[h] += tw[l] * ((float)(q - zp) * scales[blk]);
                }
            }
        }
        if (s->bias)
            for (h = 0; h < H; h++) out[h] += s->bias[h];
        return;
    }
    { /* int8 codes: the term weights quantized to uint8 (per call, or calibrated), multiplied in integers */
        float ws;
        int32_t wz;
        uint32_t *acc = w->acc;
        if (s->flags & F_STATIC) ws = s->in_scale, wz = s->in_zero;
        else {
            source none = {0};
            dynamic_range(&none, n ? tw : NULL, n, &ws, &wz);
        }
        for (h = 0; h < H; h++) acc[h] = 0;
        for (l = 0; l < n; l++) {
            int32_t q = quantize(tw[l], ws, wz) - wz;
            size_t row = (size_t)w->ids[l] * H;
            if (!q) continue;
            if (s->flags & F_SIGNED) {
                const int8_t *codes = (const int8_t *)s->w + row;
                for (h = 0; h < H; h++) acc[h] += (uint32_t)(q * (int32_t)codes[h]);
            } else {
                const uint8_t *codes = (const uint8_t *)s->w + row;
                for (h = 0; h < H; h++) acc[h] += (uint32_t)(q * (int32_t)codes[h]);
            }
        }
        { /* a code zero point other than 0: minus zero_point[h] * sum of the centred quantized weights */
            uint32_t qsum = 0;
            int any = 0;
            uint32_t channels = (s->flags & F_PER_CHANNEL) ? H : 1;
            for (h = 0; h < channels; h++) any |= s->zero[h] != 0;
            if (any) {
                for (l = 0; l < n; l++) qsum += (uint32_t)(quantize(tw[l], ws, wz) - wz);
                for (h = 0; h < H; h++) acc[h] -= qsum * (uint32_t)s->zero[(s->flags & F_PER_CHANNEL) ? h : 0];
            }
        }
        /* Dynamic: ONNX Runtime runs the graph's MatMulInteger, Cast and Muls as MatMulIntegerToFloat, which
         * scales by the weights' scale, then by the codes' (two roundings, not one by their product). */
        for (h = 0; h < H; h++) {
            uint32_t a = acc[h] + (s->bias_i32 ? (uint32_t)s->bias_i32[h] : 0u);
            if (s->flags & F_STATIC) out[h] = (float)(int32_t)a * s->unit[h];
            else out[h] = ((float)(int32_t)a * ws) * s->scale[(s->flags & F_PER_CHANNEL) ? h : 0];
            if (s->bias) out[h] = out[h] + s->bias[h];
        }
    }
}

#endif

static void dense(const ql_step *s, const source *x, const uint8_t *qx, float *out, uint8_t *qout, uint32_t *acc) {
    uint32_t K = s->in_dim, N = s->out_dim, k, n, pc = (s->flags & F_PER_CHANNEL) ? 1 : 0;
    switch (s->op) {
    case OP_RELU:
        if (!QL_HAS(OP_RELU)) return;
        for (k = 0; k < K; k++) {
            float v = at(x, k);
            out[k] = v > 0.0f ? v : 0.0f;
        }
        return;
    case OP_QUANTIZE:
        if (!QL_HAS(OP_QUANTIZE)) return;
        for (k = 0; k < K; k++) qout[k] = (uint8_t)quantize(at(x, k), s->out_scale, s->out_zero);
        return;
    case OP_DEQUANTIZE:
        if (!QL_HAS(OP_DEQUANTIZE)) return;
        for (k = 0; k < K; k++) out[k] = (float)((int32_t)qx[k] - s->in_zero) * s->in_scale;
        return;
    case OP_GEMM: /* x @ W^T + b, W (N, K) */
        if (!QL_HAS(OP_GEMM)) return;
        for (n = 0; n < N; n++) {
            const float *row = (const float *)s->w + (size_t)n * K;
            float v = 0.0f;
            for (k = 0; k < K; k++) v += at(x, k) * row[k];
            out[n] = s->bias ? v + s->bias[n] : v;
        }
        return;
    case OP_DYNQ: { /* DynamicQuantizeLinear, MatMulInteger (W (K, N)), Cast, Mul(x_scale * w_scale), Add bias */
        if (!QL_HAS(OP_DYNQ)) return;
        float xs;
        int32_t xz;
        dynamic_range(x, NULL, K, &xs, &xz);
        for (n = 0; n < N; n++) acc[n] = 0;
        for (k = 0; k < K; k++) {
            int32_t q = quantize(at(x, k), xs, xz) - xz;
            size_t row = (size_t)k * N;
            if (!q) continue;
            for (n = 0; n < N; n++) acc[n] += (uint32_t)(q * (code(s, row + n) - s->zero[pc ? n : 0]));
        }
        for (n = 0; n < N; n++) {
            float v = (float)(int32_t)acc[n] * (xs * s->scale[pc ? n : 0]);
            out[n] = s->bias ? v + s->bias[n] : v;
        }
        return;
    }
    case OP_QGEMM: /* (a - a_zero) . (w - w_zero) + bias in int32, requantized by a_scale * w_scale / y_scale */
        if (!QL_HAS(OP_QGEMM)) return;
        for (n = 0; n < N; n++) {
            size_t row = (size_t)n * K;
            uint32_t a = s->bias_i32 ? (uint32_t)s->bias_i32[n] : 0u;
            int32_t wz = s->zero[pc ? n : 0];
            float scale = s->in_scale * s->scale[pc ? n : 0];
            for (k = 0; k < K; k++) a += (uint32_t)(((int32_t)qx[k] - s->in_zero) * (code(s, row + k) - wz));
            if (s->flags & F_STATIC) {
                float v = (float)(int32_t)a * (scale / s->out_scale);
                qout[n] = (uint8_t)(round_clamp(v, (float)(0 - s->out_zero), (float)(255 - s->out_zero)) + s->out_zero);
            } else out[n] = (float)(int32_t)a * scale;
        }
        return;
    case OP_NBITS: { /* MatMulNBits: W (N, blocks, block/2) 4-bit codes along K, a scale per block */
        if (!QL_HAS(OP_NBITS)) return;
        uint32_t bs = s->a, blocks = s->b, b, i;
        for (n = 0; n < N; n++) {
            float v = 0.0f;
            for (b = 0; b < blocks; b++) {
                const uint8_t *codes = (const uint8_t *)s->w + ((size_t)n * blocks + b) * (bs / 2);
                float scale = s->scale[(size_t)n * blocks + b], part = 0.0f;
                int32_t zp = 8;
                if (s->zero_points) zp = (s->zero_points[(size_t)n * ((blocks + 1) / 2) + b / 2] >> (4 * (b % 2))) & 15;
                if (s->flags & F_INT8_COMPUTE) { /* the block of x quantized to int8, symmetric, per call */
                    float amax = 0.0f, xscale, inv;
                    int32_t dot = 0;
                    for (i = 0; i < bs && b * bs + i < K; i++) {
                        float a = fabsf(at(x, b * bs + i));
                        if (a > amax) amax = a;
                    }
                    xscale = amax / 127.0f;
                    inv = xscale != 0.0f ? 1.0f / xscale : 0.0f;
                    for (i = 0; i < bs && b * bs + i < K; i++) {
                        int32_t q = round_clamp(at(x, b * bs + i) * inv, -127.0f, 127.0f);
                        int32_t c = ((codes[i / 2] >> (4 * (i % 2))) & 15) - zp;
                        dot += q * c;
                    }
                    v += (float)dot * (xscale * scale);
                } else {
                    for (i = 0; i < bs && b * bs + i < K; i++) {
                        int32_t c = ((codes[i / 2] >> (4 * (i % 2))) & 15) - zp;
                        part += at(x, b * bs + i) * ((float)c * scale);
                    }
                    v += part;
                }
            }
            out[n] = s->bias ? v + s->bias[n] : v;
        }
        return;
    }
    default:
        return;
    }
}

static int run(const ql_model *m, workspace *w, const source *input, uint32_t terms, float *logits) {
    uint32_t i, best = 0;
    const float *f = input->f;
    const uint8_t *q = NULL;
    int flip = 0;
    (void)terms;
    for (i = 0; i < m->num_steps; i++) {
        const ql_step *s = &m->steps[i];
        float *out = flip ? w->fb : w->fa;
        uint8_t *qout = flip ? w->qb : w->qa;
#if QL_TEXT
        if (s->op <= OP_BAG_I8) bag(s, w, terms, out);
        else
#endif
        if (i == 0) dense(s, input, q, out, qout, w->acc);
        else {
            source x = {0};
            x.f = f;
            dense(s, &x, q, out, qout, w->acc);
        }
        f = out, q = qout, flip = !flip;
    }
    for (i = 1; i < m->num_classes; i++)
        if (f[i] > f[best]) best = i;
    if (logits) memcpy(logits, f, m->num_classes * sizeof *logits);
    return (int)best;
}

#if QL_TEXT
int ql_predict_text(const ql_model *m, void *work, const char *text, size_t size, int decoding, float *logits) {
    workspace w;
    source none = {0};
    uint32_t n;
    if (m->input_kind != TEXT) return QL_ERR_INPUT;
    layout(m, work, &w);
    n = featurize(m, &w, (const uint8_t *)text, size, decoding);
    return run(m, &w, &none, n, logits);
}

#endif

int ql_predict_image(const ql_model *m, void *work, const uint8_t *pixels, float *logits) {
    workspace w;
    source x = {0};
    if (m->input_kind != IMAGE) return QL_ERR_INPUT;
    layout(m, work, &w);
    x.pixels = pixels, x.scale = m->pixel_scale, x.mean = m->mean, x.std = m->std;
    return run(m, &w, &x, 0, logits);
}

const char *ql_label(const ql_model *m, uint32_t i, size_t *size) {
    uint32_t start;
    if (i >= m->num_classes) {
        *size = 0;
        return "";
    }
    start = i ? m->label_end[i - 1] : 0;
    *size = m->label_end[i] - start;
    return (const char *)m->label_bytes + start;
}
