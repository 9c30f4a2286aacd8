/* Quantlight's native core: a shipped model (term bag or dense input, then Linear layers in the artifact's own
 * arithmetic) run from one read-only model image, with the text featurizer of the Python runtime.
 *
 * C99, libc and libm only. ql_load checks a model image field by field against its length and keeps pointers
 * into it (the image must outlive the model and stay 4-byte aligned); nothing is allocated anywhere: a
 * prediction works in a caller-given workspace of ql_workspace_bytes(model) bytes. One model may serve any
 * number of threads, each with its own workspace.
 */
#ifndef QUANTLIGHT_H
#define QUANTLIGHT_H

#include <stddef.h>
#include <stdint.h>

#define QL_FORMAT_VERSION 1u

/* Build settings (a device build's model.h sets them for its model; the defaults build everything):
 * QL_MAX_STEPS layers at most; QL_TEXT 0 leaves the text featurizer out; QL_OPS the layer kinds compiled in (bit
 * i for kind i); QL_SMALL keeps one short error message. */
#ifndef QL_MAX_STEPS
#define QL_MAX_STEPS 16
#endif
#ifndef QL_TEXT
#define QL_TEXT 1
#endif
#ifndef QL_OPS
#define QL_OPS 0xFFFFFFFFu
#endif
#ifndef QL_SMALL
#define QL_SMALL 0
#endif

/* Errors: negative return values. */
#define QL_ERR_FORMAT (-1) /* not a model image, truncated, corrupted, or of another version */
#define QL_ERR_INPUT (-2)  /* an input of the wrong kind (text to an image model, a wrong pixel count) */

/* How text bytes are decoded: invalid UTF-8 becomes U+FFFD as Python's bytes.decode("utf-8", "replace") does;
 * QL_SURROGATES also reads the 3-byte forms of U+D800..U+DFFF as those code points, as a Python str holding
 * lone surrogates encodes with "surrogatepass". */
#define QL_UTF8 0
#define QL_SURROGATES 1

typedef struct {
    uint32_t op, in_dim, out_dim, flags;
    uint32_t a, b;               /* op-specific sizes (block size, blocks) */
    const void *w;               /* weights: fp32, int8/uint8 codes, or packed 4-bit codes */
    const float *scale;          /* per output channel (or one), or per block */
    const uint8_t *zero_points;  /* 4-bit: packed per block */
    const int32_t *zero;         /* int8: per output channel (or one) */
    const float *bias;           /* fp32 bias, or NULL */
    const int32_t *bias_i32;     /* int32 bias (static int8), or NULL */
    const float *unit;           /* static int8 bag: input scale x weight scale, per output */
    float in_scale, out_scale;   /* static int8: the input's and output's quantization */
    int32_t in_zero, out_zero;
} ql_step;

typedef struct {
    uint32_t input_kind; /* 0: text, 1: image */
    uint32_t input_dim, num_classes, num_steps, max_width;
    /* text */
    uint32_t lowercase, pattern, tfidf, sublinear, l2, hash_mask, max_term_bytes;
    const uint8_t *idf;       /* float64, little-endian, unaligned: read with memcpy */
    const uint32_t *term_end; /* term i is term_bytes[term_end[i - 1] .. term_end[i]) */
    const uint8_t *term_bytes;
    const uint32_t *hash; /* open addressing: term index + 1, 0 empty */
    /* image */
    float pixel_scale, mean, std;
    /* labels */
    const uint32_t *label_end;
    const uint8_t *label_bytes;
    ql_step steps[QL_MAX_STEPS];
} ql_model;

/* Check a model image and fill *model; 0 on success, else QL_ERR_FORMAT with *error (if not NULL) saying why. */
int ql_load(ql_model *model, const void *image, size_t size, const char **error);

/* Bytes of the workspace one prediction needs (8-byte aligned memory). */
size_t ql_workspace_bytes(const ql_model *model);

/* The text's class index (logits, if not NULL, receive num_classes floats), or a negative error. */
int ql_predict_text(const ql_model *model, void *workspace, const char *text, size_t size, int decoding,
                    float *logits);

/* The image's class index from input_dim pixels 0-255, or a negative error. */
int ql_predict_image(const ql_model *model, void *workspace, const uint8_t *pixels, float *logits);

/* The text's tokens as the featurizer finds them (lowercased when the model lowercases), each passed to emit
 * as UTF-8 bytes; a token longer than any term is passed truncated with its full length in `full`. Returns the
 * number of tokens. */
typedef void (*ql_token_fn)(void *context, const char *token, size_t size, size_t full);
size_t ql_tokens(const ql_model *model, const char *text, size_t size, int decoding, ql_token_fn emit,
                 void *context);

/* The text's terms (ascending columns) and their float64 values before the float32 rounding; returns the count
 * (at most input_dim). */
uint32_t ql_features(const ql_model *model, void *workspace, const char *text, size_t size, int decoding,
                     uint32_t *ids, double *values);

/* Label i (UTF-8, not terminated) and its length. */
const char *ql_label(const ql_model *model, uint32_t i, size_t *size);

#endif
