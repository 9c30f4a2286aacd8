"""The job's stages, timed and shown: seconds per stage for the report, and a line naming the stage under way.

On a terminal the line is redrawn in place as rows are done (``evaluate 3/14: onnx_int4``); piped to a file,
each stage is one plain line when it starts, so a log reads as the job went.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Stages:
    """Seconds per stage, in the order the stages ran (a stage entered twice adds up).

    >>> import io
    >>> stages = Stages(io.StringIO())
    >>> with stages("evaluate", rows=2) as step:
    ...     step("fp32"); step("onnx_int4")
    >>> list(stages.seconds), stages.stream.getvalue()
    (['evaluate'], 'Stage evaluate: 2 rows\\n')
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, rows: int = 0) -> Iterator:
        """Time the stage ``name``; the yielded ``step(label)`` marks one of its ``rows`` done."""
        done = 0

        def step(label: str = "") -> None:
            nonlocal done
            done += 1
            if self.live:
                self._draw(f"{name} {done}/{rows}: {label}" if rows else f"{name}: {label}")

        if self.live:
            self._draw(f"{name} 0/{rows}" if rows else name)
        else:
            self.stream.write(f"Stage {name}" + (f": {rows} rows" if rows else "") + "\n")
            self.stream.flush()
        start = time.perf_counter()
        try:
            yield step
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            if self.live:
                self._draw("")

    def add(self, name: str, seconds: float) -> None:
        """Record a stage timed elsewhere (e.g. the fit, by the trainer)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def _draw(self, text: str) -> None:
        self.stream.write(f"\r\033[K{text}")
        self.stream.flush()
