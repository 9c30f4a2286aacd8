/* Feeds the native core what a damaged or hostile world gives it, for a build under AddressSanitizer and
 * UndefinedBehaviorSanitizer (tests/test_native_fuzz.py): every truncation of a model file, random byte flips
 * (with the size and checksum fixed up, so that every field check is reached, not only the checksum), and random
 * bytes and UTF-8 as text. Each image is copied into a buffer of exactly its size, so that a read past it is caught.
 *
 *     cc -std=c99 -g -fsanitize=address,undefined -fno-sanitize-recover=all fuzz.c quantlight.c -lm -o fuzz
 *     ./fuzz model.qlm <seconds> <seed>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quantlight.h"

static uint32_t state = 1;
static uint32_t next(void) { /* xorshift32: reproducible from the seed */
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

static uint32_t checksum(const uint8_t *data, size_t size) { /* as quantlight.c's */
    uint32_t a = 0, b = 0, word;
    for (; size >= 4; size -= 4, data += 4) {
        memcpy(&word, data, 4);
        a += word;
        b += a;
    }
    return a ^ ((b << 16) | (b >> 16));
}

static size_t random_text(char *out, size_t cap) {
    size_t n = next() % cap, i = 0;
    while (i < n) {
        uint32_t kind = next() % 4, cp;
        if (kind == 0) out[i++] = (char)(next() & 0xFF); /* any byte */
        else if (kind == 1) out[i++] = "aB ?!.\xce\xa3'"[next() % 10];
        else if (i + 4 <= n) { /* a valid code point, surrogates included */
            cp = next() % 0x110000u;
            if (cp < 0x800) cp |= 0x80;
            if (cp < 0x10000) {
                out[i++] = (char)(0xE0 | (cp >> 12));
                out[i++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            } else {
                out[i++] = (char)(0xF0 | (cp >> 18));
                out[i++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[i++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            }
            out[i++] = (char)(0x80 | (cp & 0x3F));
        } else break;
    }
    return i;
}

static void no_token(void *context, const char *token, size_t size, size_t full) {
    (void)context, (void)token, (void)size, (void)full;
}

/* Load image[0..size) from a buffer of exactly that size; when it loads, predict a few random inputs. */
static int try_model(const uint8_t *image, size_t size, int fix, int inputs) {
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    ql_model model;
    int loaded, i;
    memcpy(copy, image, size);
    if (fix && size >= 16 && size % 4 == 0) { /* the size field and the checksum made to match */
        uint32_t total = (uint32_t)size, crc;
        memcpy(copy + 8, &total, 4);
        crc = checksum(copy, size - 4);
        memcpy(copy + size - 4, &crc, 4);
    }
    loaded = ql_load(&model, copy, size, NULL) == 0;
    if (loaded) {
        size_t bytes = ql_workspace_bytes(&model);
        void *work = bytes < ((size_t)1 << 28) ? calloc(1, bytes + 8) : NULL;
        float *logits = (float *)malloc(model.num_classes * sizeof(float));
        uint8_t *pixels = (uint8_t *)malloc(model.input_dim);
        char text[512];
        for (i = 0; work && i < inputs; i++) {
            size_t n = random_text(text, sizeof text), k;
            if (model.input_kind == 0) {
                ql_predict_text(&model, work, text, n, (int)(next() % 2), logits);
                ql_tokens(&model, text, n, QL_UTF8, no_token, NULL);
            } else {
                for (k = 0; k < model.input_dim; k++) pixels[k] = (uint8_t)next();
                ql_predict_image(&model, work, pixels, logits);
            }
        }
        free(work), free(logits), free(pixels);
    }
    free(copy);
    return loaded;
}

int main(int argc, char **argv) {
    FILE *f;
    uint8_t *image, *flipped;
    long size;
    size_t cut;
    double seconds;
    clock_t start = clock();
    unsigned long truncations = 0, flips = 0, flipped_loads = 0;
    if (argc != 4) {
        fprintf(stderr, "usage: fuzz <model.qlm> <seconds> <seed>\n");
        return 2;
    }
    seconds = atof(argv[2]);
    state = (uint32_t)strtoul(argv[3], NULL, 10) | 1u;
    f = fopen(argv[1], "rb");
    if (!f || fseek(f, 0, SEEK_END) || (size = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET)) return 2;
    image = (uint8_t *)malloc((size_t)size);
    flipped = (uint8_t *)malloc((size_t)size);
    if (fread(image, 1, (size_t)size, f) != (size_t)size) return 2;
    fclose(f);
    if (!try_model(image, (size_t)size, 0, 2000)) {
        fprintf(stderr, "the model itself does not load\n");
        return 1;
    }
    for (cut = 0; cut < (size_t)size; cut++, truncations++) { /* every truncation, as is and fixed up */
        if (try_model(image, cut, 0, 0)) return 1; /* a truncated file never loads */
        try_model(image, cut, 1, 1);            /* nor, fixed up, reads past its end */
        if ((double)(clock() - start) / CLOCKS_PER_SEC > seconds / 2) break;
    }
    while ((double)(clock() - start) / CLOCKS_PER_SEC < seconds) {
        int k, count = 1 + (int)(next() % 4);
        memcpy(flipped, image, (size_t)size);
        for (k = 0; k < count; k++) {
            /* half the flips in the first 4 KB: the header, the labels, the settings and the layer records */
            size_t at = (next() % 2 && size > 4096) ? next() % 4096 : next() % (size_t)size;
            flipped[at] ^= (uint8_t)(1u << (next() % 8));
        }
        flipped_loads += (unsigned long)try_model(flipped, (size_t)size, 1, 3);
        flips++;
    }
    printf("truncations %lu, flips %lu (loaded %lu), all without a fault\n", truncations, flips, flipped_loads);
    free(image), free(flipped);
    return 0;
}
