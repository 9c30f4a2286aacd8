"""The documented commands as data: every ``python cli.py ...`` and ``make ...`` line of the shell code blocks of
README.md and then of each ``docs/*.md`` page (by name), and the one way a test may change each before running it
(epochs capped; a documented quick run instead of a long one). The relative links of the same pages, as data too.

A line may name its own quick run in its comment, in backticks: ``make bench  # ...; quick run: `make bench
ARGS=--quick```. The test runs that instead (a long benchmark, the test suite itself, a command that needs the
network); everything else runs as written, with ``--trainer.max_epochs`` (and each QAT method's ``epochs``)
capped by appended overrides. A command documented in several places runs once, where it comes first.
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
NEEDS_QUICK_RUN = ("make test", "make bench", "make lock")  # too long (or networked) to run as typed
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FIT_EPOCHS, RESUME_EPOCHS, QAT_EPOCHS = 1, 2, 1


@dataclass(frozen=True)
class Command:
    """One documented command: the line as a user types it, its comment, where it is, and what a test runs for it.

    Args:
        line: The command without its comment (continuation lines joined).
        comment: The text after ``#``, if any.
        number: The line of its page it starts on.
        page: Its page, relative to the repository root (``README.md``, ``docs/text.md``).
    """

    line: str
    comment: str
    number: int
    page: str = "README.md"

    @property
    def where(self) -> str:
        """``page:line``, as the summary's table and the test ids name it."""
        return f"{self.page}:{self.number}"

    @property
    def quick(self) -> str | None:
        """The quick run the comment names in backticks, if any."""
        match = _QUICK.search(self.comment)
        return match.group(1) if match else None

    def to_run(self) -> str:
        """The shell line a test runs: the quick run, else the command; epochs capped either way."""
        return capped(self.quick or self.line)


def documented_pages(root: Path) -> list[str]:
    """The pages whose commands run and whose links are checked, in the order they run: README.md, then ``docs/``
    by name (a docs page may use what the README's commands made, never what another page's made)."""
    return ["README.md", *sorted(path.relative_to(root).as_posix() for path in (root / "docs").glob("*.md"))]


def documented_commands(root: Path) -> list[Command]:
    """Every documented command of the pages under ``root``, in the order they run, each once: a line typed (or
    run) again on a later page is the command already listed.

    >>> import tempfile
    >>> pages = {
    ...     "README.md": "```bash\\nmake fit  # train\\nmake test  # quick run: `make -n test`\\n```\\n",
    ...     "docs/b.md": "```bash\\nmake test\\npython cli.py test -c x.yaml\\n```\\n",
    ...     "docs/a.md": "```\\nmake fit  # again\\n```\\n",
    ... }
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     (Path(folder) / "docs").mkdir()
    ...     for name, text in pages.items():
    ...         _ = Path(folder, name).write_text(text)
    ...     [(c.where, c.line, c.quick) for c in documented_commands(Path(folder))]
    [('README.md:2', 'make fit', None), ('README.md:3', 'make test', 'make -n test'), \
('docs/b.md:3', 'python cli.py test -c x.yaml', None)]
    """
    commands, lines, runs = [], set(), set()
    for page in documented_pages(root):
        for command in readme_commands(root / page, page):
            if command.line not in lines and command.to_run() not in runs:
                commands.append(command)
            lines.add(command.line)
            runs.add(command.to_run())
    return commands


def readme_commands(readme: Path, page: str = "README.md") -> list[Command]:
    """Every documented command of ``readme``'s shell code blocks, in order; ``page`` names it in each command.

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
            commands.append(Command(command, comment, start, page))
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


def github_anchor(heading: str) -> str:
    """The ``#anchor`` GitHub gives a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces as ``-``.

    >>> github_anchor("Quantization-aware training (QAT)"), github_anchor("Which one should I ship?")
    ('quantization-aware-training-qat', 'which-one-should-i-ship')
    >>> github_anchor("The `prune` setting, per size: 4,000 terms")
    'the-prune-setting-per-size-4000-terms'
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def page_anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings (outside code blocks); a repeated heading gets ``-1``, ``-2``, as on GitHub.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "page.md")
    ...     _ = path.write_text("# Top\\n## Notes\\n```bash\\n# not a heading\\n```\\n## Notes\\n")
    ...     sorted(page_anchors(path))
    ['notes', 'notes-1', 'top']
    """
    anchors, seen, block = set(), {}, False
    for raw in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(raw.strip()):
            block = not block
            continue
        heading = None if block else _HEADING.match(raw)
        if heading:
            anchor = github_anchor(heading.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def relative_links(page: Path) -> list[tuple[int, str]]:
    """Each relative link of ``page`` (its line, its target: a path, ``path#anchor`` or ``#anchor``), outside code.

    >>> import tempfile
    >>> text = "See [a](docs/a.md#x), [`b.yaml`](configs/b.yaml), [w](https://x.org), `[c](d)`.\\n```\\n[e](f)\\n```\\n"
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "README.md")
    ...     _ = path.write_text(text)
    ...     relative_links(path)
    [(1, 'docs/a.md#x'), (1, 'configs/b.yaml')]
    """
    links, block = [], False
    for number, raw in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE.match(raw.strip()):
            block = not block
            continue
        if not block:
            targets = _LINK.findall(_CODE_SPAN.sub("", raw))
            links += [(number, target) for target in targets if not _SCHEME.match(target)]
    return links


def broken_link(page: Path, target: str) -> str | None:
    """Why ``target``, a relative link of ``page``, leads nowhere (a missing file or heading); None if it resolves."""
    name, _, anchor = target.partition("#")
    path = (page.parent / name).resolve() if name else page
    if not path.exists():
        return f"{target}: no file {name}"
    if anchor and (path.suffix != ".md" or anchor not in page_anchors(path)):
        return f"{target}: no heading #{anchor} in {path.name}"
    return None
