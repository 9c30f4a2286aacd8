"""Shared fixtures: tiny, real-format data written to tmp_path, and the offline mirror; the README commands' table
in the run's summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_digits, mirror_path, write_idx, write_imdb_tree, write_text_corpus
from tests.readme_commands import MODES, README_COMMAND


@pytest.fixture(autouse=True)
def _onnxruntime_engine(request, monkeypatch) -> None:
    """Bundles load on ONNX Runtime in every test but the native core's own (test_native.py picks engines itself):
    the others compare a bundle with its artifact as ONNX Runtime runs a batch, and time its two parts."""
    if request.node.path.name != "test_native.py":
        monkeypatch.setenv("QUANTLIGHT_ENGINE", "onnxruntime")


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A torchvision-style MNIST root with 600 train and 200 test synthetic images."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 600, 0), ("t10k", 200, 1)):
        images, labels = make_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path / "mnist"


@pytest.fixture
def mirror() -> Path:
    """The offline data mirror; CI must have it, elsewhere its tests are skipped with a reason."""
    return mirror_path()


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    """A tiny labelled CSV corpus (80 rows, two classes) in tmp_path."""
    return write_text_corpus(tmp_path / "corpus.csv")


@pytest.fixture
def imdb_root(tmp_path: Path) -> Path:
    """A tiny aclImdb tree (12 reviews per split and label) under tmp_path/imdb."""
    return write_imdb_tree(tmp_path / "imdb")


def pytest_terminal_summary(terminalreporter) -> None:
    """The table of documented commands (tests/test_readme.py): exit code and seconds in a terminal and piped, one
    line each, named by page and line, from the properties its tests recorded (they reach the summary from xdist
    workers too)."""
    found: dict[int, dict[str, tuple]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == README_COMMAND and getattr(report, "when", "") == "call":
                    index, mode, *figures = value
                    found.setdefault(index, {})[mode] = tuple(figures)
    if not found:
        return
    terminalreporter.write_line("Documented commands: exit code in a terminal / piped, seconds in a terminal / piped")
    for index in sorted(found):
        modes = [found[index].get(mode) for mode in MODES]
        codes = " / ".join("-" if m is None else str(m[0]) for m in modes)
        seconds = " / ".join("-" if m is None else str(m[1]) for m in modes)
        where, shown = next(m for m in modes if m is not None)[2:]
        terminalreporter.write_line(f"  {codes:>7}  {seconds:>9} s  {where}  {shown}")
