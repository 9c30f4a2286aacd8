"""README's commands as data: every ``python cli.py ...`` and ``make ...`` line of its shell code blocks, and the
one way a test may change each before running it (epochs capped; a documented quick run instead of a long one).

A README line may name its own quick run in its comment, in backticks: ``make bench  # ...; quick run: `make bench
ARGS=--quick```. The test runs that instead (a long benchmark, the test suite itself, a command that needs the
network); everything else runs as written, with ``--trainer.max_epochs`` (and each QAT method's ``epochs``)
capped by appended overrides.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

_FENCE = re.compile(r"^```(\w*)\s*$")
_SHELL_BLOCKS = ("", "bash", "sh", "shell", "console")
_QUICK = re.compile(r"quick run[^:`]*: `([^`]+)`")
MODES = ("terminal", "piped")  # how tests/test_readme.py runs each command
README_COMMAND = "readme_command"  # each run's recorded property, which the run's summary tabulates (tests/conftest.py)
_DOCUMENTED = ("python cli.py ", "make ")
FIT_EPOCHS, RESUME_EPOCHS, QAT_EPOCHS = 1, 2, 1


@dataclass(frozen=True)
class Command:
    """One README command: the line as a user types it, its comment, and what a test runs for it.

    Args:
        line: The command without its comment (continuation lines joined).
        comment: The text after ``#``, if any.
        number: The README line it starts on.
    """

    line: str
    comment: str
    number: int

    @property
    def quick(self) -> str | None:
        """The quick run the comment names in backticks, if any."""
        match = _QUICK.search(self.comment)
        return match.group(1) if match else None

    def to_run(self) -> str:
        """The shell line a test runs: the quick run, else the command; epochs capped either way."""
        return capped(self.quick or self.line)


def readme_commands(readme: Path) -> list[Command]:
    """Every documented command of ``readme``'s shell code blocks, in order.

    >>> import tempfile
    >>> text = "Intro\\n```bash\\nmake fit  # train\\npython cli.py fit \\\\\\n  -c x.yaml\\nls\\n```\\n"
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "README.md")
    ...     _ = path.write_text(text)
    ...     [(c.line, c.comment, c.number) for c in readme_commands(path)]
    [('make fit', 'train', 3), ('python cli.py fit -c x.yaml', '', 4)]
    """
    commands, block, pending, start = [], None, "", 0
    for number, raw in enumerate(readme.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(raw.strip())
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block is None or block not in _SHELL_BLOCKS:
            continue
        line = raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        command, comment = split_comment(line)
        if command.startswith(_DOCUMENTED):
            commands.append(Command(command, comment, start))
    return commands


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's command and its ``#`` comment (a ``#`` inside quotes, or inside a word, is not one).

    >>> split_comment("make fit ARGS='--a #b'   # train it")
    ("make fit ARGS='--a #b'", 'train it')
    """
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def capped(line: str) -> str:
    """``line`` with training capped by appended overrides: ``max_epochs`` (1 for a fresh ``fit``, 2 when it
    resumes with ``--ckpt_path``) and each QAT method's ``epochs``; other commands are unchanged.

    >>> capped("python cli.py fit -c a.yaml --trainer.callbacks.qat '{int3_weight_only: {epochs: 10}}'")
    "python cli.py fit -c a.yaml --trainer.callbacks.qat '{int3_weight_only: {epochs: 10}}' --trainer.max_epochs 1 \
--trainer.callbacks.qat '{int3_weight_only: {epochs: 1}}'"
    >>> capped('make fit ARGS="--data.data_dir d"')
    "make fit 'ARGS=--data.data_dir d --trainer.max_epochs 1'"
    >>> capped("python cli.py test -c a.yaml")
    'python cli.py test -c a.yaml'
    """
    words = shlex.split(line)
    if words[:3] == ["python", "cli.py", "fit"]:
        return f"{line} {shlex.join(_caps(words))}"
    if words[:2] == ["make", "fit"]:
        given = next((w for w in words if w.startswith("ARGS=")), None)
        extra = shlex.join(_caps(shlex.split(given.removeprefix("ARGS=")) if given else []))
        args = f"{given.removeprefix('ARGS=')} {extra}" if given else extra
        return shlex.join([w for w in words if w is not given] + [f"ARGS={args}"])
    return line


def _caps(words: list[str]) -> list[str]:
    epochs = RESUME_EPOCHS if "--ckpt_path" in words else FIT_EPOCHS
    caps = ["--trainer.max_epochs", str(epochs)]
    for flag, value in itertools.pairwise(words):
        if flag == "--trainer.callbacks.qat":
            qat = yaml.safe_load(value) or {}
            qat = {name: {**(settings or {}), "epochs": QAT_EPOCHS} for name, settings in qat.items()}
            caps += [flag, "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in qat.items()) + "}"]
    return caps


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"
