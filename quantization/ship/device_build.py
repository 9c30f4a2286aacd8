"""A bundle's device build: its native model as plain C in a folder of its own, for a microcontroller or any C program.

``device/`` holds the model image as a ``const`` array (``model.h``, with the build settings that leave out the layer
kinds and the featurizer it does not use), the core's sources, ``predict.c`` (static buffers, no heap) and an example
``main.c`` that reads one input per line on stdin and prints one label per line. :func:`footprint` compiles the core as
the folder does and states its flash (code + constants, from the object's sizes) and RAM (static buffers + a stack
bound: the sum of every function's frame, a bound since nothing recurses).
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantization.ship.native_model import OPS, Step
from runtime.native import gen_unicode

FOLDER = "device"
NATIVE_SOURCES = Path(__file__).resolve().parents[2] / "runtime" / "native"
COMPILE = ["-std=c99", "-Os", "-Wall", "-Werror"]  # as the device test builds the folder
_IMAGE_ARRAY = "static const uint32_t ql_model_image"
_HEX_PAIRS = np.frombuffer("".join(f"{b:02X}" for b in range(256)).encode("ascii"), dtype=np.uint16)  # byte -> 2 digits


def workspace_bytes(steps: Sequence[Step], text: bool, input_dim: int, num_classes: int, term_bytes: int) -> int:
    """``ql_workspace_bytes`` of the model (``layout`` in ``quantlight.c``): per-term buffers for text, two float and
    two byte activations and an int32 accumulator as wide as the widest layer."""
    up8 = lambda n: -(-n // 8) * 8  # noqa: E731
    d = input_dim if text else 0
    width = max([num_classes, *(s.out_dim for s in steps), *(s.in_dim for s in steps[1:])])
    per_term = up8(4 * d) * 3 + up8(8 * d) + up8(term_bytes + 4 if d else 0)
    return per_term + 2 * up8(4 * width) + 2 * up8(width) + up8(4 * width)


def model_header(image: bytes, steps: Sequence[Step], text: bool, workspace: int) -> bytes:
    """``model.h``: the build settings of this model, and its image as ``const`` 32-bit little-endian words."""
    ops = sum(1 << OPS[step.op] for step in steps)
    settings = "\n".join(
        [
            "/* This bundle's model for the native core (written by Quantlight; the bytes of model.qlm). */",
            "#ifndef QL_MODEL_H",
            "#define QL_MODEL_H",
            "#include <stdint.h>",
            f"#define QL_TEXT {int(text)}",
            f"#define QL_OPS 0x{ops:X}u /* the layer kinds this model uses */",
            f"#define QL_MAX_STEPS {len(steps)}",
            "#define QL_SMALL 1",
            f"#define QL_MODEL_BYTES {len(image)}u",
            f"#define QL_WORKSPACE_BYTES {workspace}u",
            "",
        ]
    )
    array = f"{_IMAGE_ARRAY}[{len(image) // 4}] = {{\n"
    return (settings + array).encode("ascii") + c_words(image) + b"\n};\n#endif\n"


def c_words(image: bytes, per_line: int = 8) -> bytes:
    """``image`` as lines of C ``uint32_t`` literals (little-endian words), ``per_line`` to a line, each followed by a
    comma; built as one byte array (a 100,000-term fp32 model is 12.8 million words: seconds word by word), each
    byte's two digits looked up at once.

    >>> print(c_words(bytes(range(12)), per_line=2).decode())
        0x03020100,0x07060504,
        0x0B0A0908,
    """
    data = np.frombuffer(image, dtype=np.uint8).reshape(-1, 4)
    lines = -(-len(data) // per_line)
    literals = np.full((lines * per_line, 11), ord(" "), dtype=np.uint8)  # 0xXXXXXXXX, (the last line's rest: spaces)
    words = literals[: len(data)]
    words[:, 0], words[:, 1], words[:, 10] = ord("0"), ord("x"), ord(",")
    words[:, 2:10].view(np.uint16)[:] = _HEX_PAIRS[data[:, ::-1]]  # most significant byte first
    text = np.empty((lines, 4 + per_line * 11 + 1), dtype=np.uint8)  # four spaces, the literals, a newline
    text[:, :4], text[:, 4:-1], text[:, -1] = ord(" "), literals.reshape(lines, -1), ord("\n")
    missing = (-len(data)) % per_line  # words the last line lacks: its trailing spaces go, with the final newline
    return text.reshape(-1)[: text.size - 1 - 11 * missing].tobytes()


PREDICT_C = """/* This model's predict functions: the core compiled with model.h's settings, the model in flash, static
 * buffers, no heap. */
#include "model.h"
#include "quantlight.c"
#include "predict.h"

static ql_model model;
static uint64_t work[(QL_WORKSPACE_BYTES + 7u) / 8u]; /* zero at start, as the text featurizer needs */
static int loaded;

int predict_init(void) {
    if (loaded) return 0;
    if (ql_load(&model, ql_model_image, QL_MODEL_BYTES, NULL) || ql_workspace_bytes(&model) > sizeof work)
        return -1;
    loaded = 1;
    return 0;
}

#if QL_TEXT
int predict_text(const char *text, size_t size) {
    return predict_init() ? -1 : ql_predict_text(&model, work, text, size, QL_UTF8, NULL);
}
#else
int predict_image(const unsigned char *pixels) {
    return predict_init() ? -1 : ql_predict_image(&model, work, pixels, NULL);
}
#endif

const char *predict_label(int label, size_t *size) { return ql_label(&model, (uint32_t)label, size); }
"""

MAIN_C = """/* Example: one input per line on stdin (a UTF-8 text; or an image as its PREDICT_INPUT_DIM pixel values
 * 0-255 separated by spaces), one label per line on stdout.
 *
 *     cc -std=c99 -Os -Wall -Werror main.c predict.c -lm -o classify && ./classify < inputs.txt
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predict.h"

static char line[1 << 16];

int main(void) {
    if (predict_init()) {
        fputs("the model does not load\\n", stderr);
        return 1;
    }
    while (fgets(line, sizeof line, stdin)) {
        size_t size = strcspn(line, "\\n");
        const char *name;
        size_t name_size;
        int label;
#if PREDICT_TEXT
        label = predict_text(line, size);
#else
        static unsigned char pixels[PREDICT_INPUT_DIM];
        char *at = line, *end;
        size_t i;
        line[size] = 0;
        for (i = 0; i < PREDICT_INPUT_DIM; i++, at = end) {
            long value = strtol(at, &end, 10);
            if (end == at || value < 0 || value > 255) break;
            pixels[i] = (unsigned char)value;
        }
        if (i != PREDICT_INPUT_DIM) {
            fprintf(stderr, "expected %d pixel values 0-255, got %lu\\n", PREDICT_INPUT_DIM, (unsigned long)i);
            return 1;
        }
        label = predict_image(pixels);
#endif
        if (label < 0) return 1;
        name = predict_label(label, &name_size);
        printf("%.*s\\n", (int)name_size, name);
    }
    return 0;
}
"""


def predict_header(text: bool, input_dim: int) -> str:
    return "\n".join(
        [
            "/* This model's predict functions (predict.c): no heap, no threads; the first call loads the model. */",
            "#ifndef PREDICT_H",
            "#define PREDICT_H",
            "#include <stddef.h>",
            f"#define PREDICT_TEXT {int(text)}",
            f"#define PREDICT_INPUT_DIM {input_dim}",
            "int predict_init(void); /* 0, or -1 when the model does not load */",
            "int predict_text(const char *text, size_t size); /* UTF-8 text -> class index (-1: not loaded) */",
            "int predict_image(const unsigned char *pixels); /* PREDICT_INPUT_DIM pixels -> class index */",
            "const char *predict_label(int label, size_t *size); /* the class's name, not terminated */",
            "#endif",
            "",
        ]
    )


def device_files(
    image: bytes, steps: Sequence[Step], preprocessing: Mapping[str, Any], num_classes: int
) -> dict[str, bytes]:
    """The device folder's files, by path in the bundle (``device/...``)."""
    text = preprocessing.get("input") == "text"
    input_dim = steps[0].in_dim if text else _input_dim(preprocessing)
    term_bytes = _longest_term(preprocessing) if text else 0
    workspace = workspace_bytes(steps, text, input_dim, num_classes, term_bytes)
    sources = {
        "predict.h": predict_header(text, input_dim),
        "predict.c": PREDICT_C,
        "main.c": MAIN_C,
        "quantlight.h": (NATIVE_SOURCES / "quantlight.h").read_text(encoding="utf-8"),
        "quantlight.c": (NATIVE_SOURCES / "quantlight.c").read_text(encoding="utf-8"),
    }
    if text:
        sources["unicode_tables.h"] = unicode_tables()
    files = {"model.h": model_header(image, steps, text, workspace)} | {
        name: content.encode("utf-8") for name, content in sources.items()
    }
    return {f"{FOLDER}/{name}": content for name, content in files.items()}


@functools.cache
def unicode_tables() -> str:
    """``unicode_tables.h`` of this interpreter: the one the native build wrote, or a new one (once per process)."""
    return gen_unicode.built_or_new()


def _input_dim(preprocessing: Mapping[str, Any]) -> int:
    height, width = preprocessing["image_shape"]
    return int(height) * int(width)


def _longest_term(preprocessing: Mapping[str, Any]) -> int:
    vocabulary = preprocessing["vectorizer"]["vocabulary"]
    return max((len(term.encode("utf-8", "surrogatepass")) for term in vocabulary), default=0)


def footprint(files: Mapping[str, bytes], model_bytes: int) -> dict[str, Any]:
    """Flash and RAM of the device build, from the sizes of ``predict.c``'s object compiled with ``cc -Os`` (the model
    array stubbed out, its bytes added: a large vocabulary compiles slowly), or why there are none (no C compiler)."""
    header = files[f"{FOLDER}/model.h"]
    config = header[: header.index(_IMAGE_ARRAY.encode("ascii"))].decode("ascii")
    text = f"{FOLDER}/unicode_tables.h" in files
    figures = _compiled_sizes(config, text)
    if figures is None:
        return {"unmeasured": "no C compiler (cc) where the bundle was written"}
    code, static_ram, stack = figures
    return {
        "flash_bytes": code + model_bytes,
        "code_bytes": code,
        "model_bytes": model_bytes,
        "ram_bytes": static_ram + stack,
        "static_ram_bytes": static_ram,
        "stack_bound_bytes": stack,
        "measured_with": f"cc {' '.join(COMPILE)}, {platform.machine()}",
    }


@functools.lru_cache(maxsize=16)
def _compiled_sizes(config: str, text: bool) -> tuple[int, int, int] | None:
    """``(code and constants but the model, static RAM, stack bound)`` bytes of ``predict.o``, or ``None``."""
    compiler, size = shutil.which("cc"), shutil.which("size")
    if compiler is None or size is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model.h").write_text(config + f"{_IMAGE_ARRAY}[1] = {{0}};\n#endif\n")
        (folder / "predict.h").write_text(predict_header(text, 1))
        (folder / "predict.c").write_text(PREDICT_C)
        for name in ("quantlight.h", "quantlight.c"):
            shutil.copy(NATIVE_SOURCES / name, folder / name)
        if text:
            (folder / "unicode_tables.h").write_text(unicode_tables())
        build = subprocess.run(
            [compiler, *COMPILE, "-fstack-usage", "-c", "predict.c", "-o", "predict.o"],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        if build.returncode:
            raise RuntimeError(f"The device build does not compile: {build.stderr.strip()[:400]}")
        sizes = subprocess.run([size, "predict.o"], cwd=folder, capture_output=True, text=True, check=True)
        text_bytes, data, bss = (int(v) for v in sizes.stdout.splitlines()[1].split()[:3])
        stack = sum(int(line.split()[-2]) for line in (folder / "predict.su").read_text().splitlines() if line)
    return text_bytes + data - 4, data + bss, stack  # the 4-byte stub array is not the model's
