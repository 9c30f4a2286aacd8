"""The machine a report was measured on: CPU, the ISA features that decide int8 speed and
correctness, library versions and threads.

int8 GEMM kernels differ by CPU: AVX2 without VNNI sums pairs of u8 x s8 products in int16
(``vpmaddubsw``), VNNI and AMX accumulate in int32. A figure means little without these.
"""

from __future__ import annotations

import platform
import re
from functools import cache
from importlib import metadata
from pathlib import Path

# /proc/cpuinfo flags that decide which int8 kernels run.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
_LIBRARIES = ("torch", "onnxruntime", "onnx", "lightning")


@cache
def machine_info() -> dict[str, object]:
    """CPU model, int8-relevant ISA flags (``True``/``False`` each), and library versions.

    >>> info = machine_info()
    >>> sorted(info["isa"]) == sorted(INT8_FLAGS) and "torch" in info["versions"]
    True
    """
    model, flags = _cpuinfo()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "isa": {flag: flag in flags for flag in INT8_FLAGS},
        "int8_kernel": int8_kernel(flags),
        "versions": {name: _version(name) for name in _LIBRARIES},
        "python": platform.python_version(),
    }


def int8_kernel(flags: set[str]) -> str:
    """How this CPU multiplies u8 x s8: the instruction family int8 GEMMs use here.

    >>> int8_kernel({"avx2"})
    'avx2 (vpmaddubsw: int16 pair sums saturate)'
    >>> int8_kernel({"avx2", "avx512f", "avx512_vnni"})
    'avx512_vnni (int32 accumulation)'
    """
    for flag in ("amx_int8", "avx512_vnni", "avx_vnni"):
        if flag in flags:
            return f"{flag} (int32 accumulation)"
    if "avx2" in flags or "avx512bw" in flags:
        return f"{'avx512bw' if 'avx512bw' in flags else 'avx2'} (vpmaddubsw: int16 pair sums saturate)"
    return "other (no x86 int8 dot-product instructions found)"


def describe(info: dict[str, object]) -> str:
    """One line for reports: CPU, int8 kernel family, versions.

    >>> describe({"cpu": "AMD EPYC", "int8_kernel": "avx2 (x)", "versions": {"torch": "2.14.1"}, "python": "3.11"})
    'AMD EPYC; int8 kernel: avx2 (x); torch 2.14.1; Python 3.11'
    """
    versions = "; ".join(f"{name} {version}" for name, version in info["versions"].items())
    return f"{info['cpu']}; int8 kernel: {info['int8_kernel']}; {versions}; Python {info['python']}"


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the model from platform, no flags
        return "", set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return (model.group(1).strip() if model else ""), set(flags.group(1).split() if flags else ())


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
