"""Builds Quantlight's optional native core (``quantlight_native``) with the project: ``pip install .`` (``make``).

Everything else is configured in ``pyproject.toml``. The extension is optional: on a machine without a C compiler
the install still succeeds and bundles run on numpy and ONNX Runtime. Its Unicode tables are generated first
from this interpreter (``runtime/native/gen_unicode.py``), so they match the Python featurizer it will run beside.
"""

import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = Path("runtime/native")


class BuildWithTables(build_ext):
    def run(self) -> None:
        subprocess.run([sys.executable, str(NATIVE / "gen_unicode.py"), str(NATIVE / "unicode_tables.h")], check=True)
        super().run()


setup(
    ext_modules=[
        Extension(
            "quantlight_native",
            sources=[str(NATIVE / "binding.c"), str(NATIVE / "quantlight.c")],
            include_dirs=[str(NATIVE)],
            depends=[str(NATIVE / "quantlight.h")],
            # The featurizer's float64 steps must round as Python's do: no fused multiply-adds.
            extra_compile_args=["-O2", "-std=c99", "-ffp-contract=off"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildWithTables},
)
