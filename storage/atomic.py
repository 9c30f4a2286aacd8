"""Atomic writes: a reader sees the old file (or folder) or the whole new one, never a partial write or a mix."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# The siblings a folder is written into and moved aside to while atomic_folder swaps it; a reader that meets one
# knows a swap is under way (runtime.bundle.REWRITE_MARKS reads the same names).
TMP_MARK, OLD_MARK = ".tmp-", ".old-"


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader sees the old file or the whole new one, never a partial write.
    """
    with _replacing(path, sync=True) as f:
        f.write(data)
    return Path(path)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` as :func:`atomic_write` writes: straight to the temporary file, not serialized
    in memory first, and without the zip records' CRC-32, which ``torch.load`` never checks (a 13 MB checkpoint:
    11 ms against Lightning's 31; 21 with the CRC). Not synced to disk, as Lightning's own checkpoint writes are not:
    a reader sees the old file or the whole new one."""
    import torch
    from torch.utils.serialization import config

    with _replacing(path, sync=False) as f, config.patch("save.compute_crc32", False):
        torch.save(obj, f)
    return Path(path)


@contextmanager
def _replacing(path: str | os.PathLike, sync: bool) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` to write; once written (and synced to disk, with ``sync``) it replaces
    ``path``, and on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; on success it takes ``folder``'s place, on failure it is removed.

    The new folder is ``<folder>.tmp-<random>``; the swap is two renames (``folder`` to ``<folder>.old-<random>``,
    the new folder to ``folder``), then the old one is deleted. POSIX cannot rename over a non-empty folder, so
    for a moment ``folder`` is missing: a reader that fails while a ``.tmp-``/``.old-`` sibling exists reads again
    (``runtime.bundle`` does), and a reader that checks every file against one manifest never mixes two folders.

    >>> with atomic_folder(Path(tempfile.mkdtemp()) / "bundle") as tmp:
    ...     _ = (tmp / "a.txt").write_text("new")
    """
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}{TMP_MARK}{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for file in sorted(tmp.rglob("*")):
            if file.is_file():
                _fsync(file)
        if not folder.exists():
            os.rename(tmp, folder)
            return
        old = folder.with_name(f"{folder.name}{OLD_MARK}{secrets.token_hex(4)}")
        os.rename(folder, old)
        try:
            os.rename(tmp, folder)
        except BaseException:
            os.rename(old, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the swap succeeded


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())
