"""Every command the README and the docs document works as a user types it: each ``python cli.py ...`` and
``make ...`` line of their shell code blocks, README first and then ``docs/*.md`` by name (a command documented
twice runs once, where it comes first), exits 0 with no traceback, once in a terminal (the progress bar live) and
once with its output piped to a file. Every relative link of the same pages leads to a file and heading that exist.

Each of the two runs works in its own copy of the repository (the tracked files, and the environment ``make``
built), beside which ``../shared/data`` is the offline mirror and in which ``data/`` holds what the loaders would
download (MNIST) or read by default (``data/corpus.csv``: the tweets), and ``texts.txt`` a few tweets to predict.
Commands run in a shell where ``.venv`` is active, as README asks (``source .venv/bin/activate``), so ``python``
is the environment's whatever the caller's ``PATH`` holds. The only changes to a command are appended overrides
that cap its epochs (``tests/readme_commands.py``), or the quick run its comment names. The two runs go side by
side; the table of commands (each by page and line) and exit codes ends the run's summary whatever the outcome.
"""

from __future__ import annotations

import csv
import os
import pty
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, mirror_path
from tests.readme_commands import (
    MODES,
    NEEDS_QUICK_RUN,
    README_COMMAND,
    broken_link,
    documented_commands,
    documented_pages,
    relative_links,
)

COMMANDS = documented_commands(REPO)
_TIMEOUT_S = 900  # one command; the longest (a text fit with its report) takes about a minute


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str
    seconds: float


def test_docs_document_the_commands_this_test_runs():
    lines = [c.line for c in COMMANDS]
    assert any(line.startswith("python cli.py fit -c configs/mnist_logistic.yaml") and "qat" in line for line in lines)
    assert {"make fit", "make test", "make bench"} <= {" ".join(line.split()[:2]) for line in lines}
    assert {c.page for c in COMMANDS} > {"README.md"}, "the docs pages' commands run too"
    assert "source .venv/bin/activate" in (REPO / "README.md").read_text("utf-8"), "the commands below assume it"
    assert all(not any(part in c.line for part in ("...", "<", ">")) for c in COMMANDS), "placeholders in a command"
    slow = [c.where for c in COMMANDS if c.line.startswith(NEEDS_QUICK_RUN) and c.quick is None]
    assert not slow, f"name a quick run in the comment (`# ...; quick run: `...``) of {slow}"


def test_every_relative_link_leads_to_a_file_and_heading():
    broken = [
        f"{page}:{number}: {why}"
        for page in documented_pages(REPO)
        for number, target in relative_links(REPO / page)
        if (why := broken_link(REPO / page, target))
    ]
    assert not broken, "\n".join(broken)


def test_readme_names_every_config():
    readme = (REPO / "README.md").read_text("utf-8")
    unnamed = [path.as_posix() for path in sorted(REPO.glob("configs/*.yaml")) if f"configs/{path.name}" not in readme]
    assert not unnamed, f"name each config in README's Configs list: {unnamed}"


def scratch_repository(root: Path, mirror: Path) -> Path:
    """A copy of the tracked files in ``root/repo``, the environment ``make`` built, and the mirror's data."""
    repo = root / "repo"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():  # a file deleted in the working tree is not copied
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)  # mtimes kept: make sees its environment as up to date
    venv = REPO / ".venv"
    assert (venv / ".installed").is_file(), "run the suite as README says (make test): it builds .venv first"
    (repo / ".venv").symlink_to(venv)
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(mirror)
    (repo / "data").mkdir()
    (repo / "data" / "MNIST").symlink_to(mirror / "MNIST")
    tweets = mirror / "sentiment-tweets" / "tweets.csv"
    (repo / "data" / "corpus.csv").symlink_to(tweets)
    with tweets.open(newline="", encoding="utf-8") as f:
        texts = [row["text"].replace("\n", " ") for row, _ in zip(csv.DictReader(f), range(20), strict=False)]
    (repo / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return repo


def run_in_terminal(line: str, cwd: Path, env: dict) -> tuple[int, str]:
    """Run ``line`` with a pseudo-terminal as stdin, stdout and stderr (120 columns); its exit code and output."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, True)
    env = env | {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=_TIMEOUT_S), b"".join(chunks).decode("utf-8", "replace")


def run_piped(line: str, cwd: Path, env: dict, log: Path) -> tuple[int, str]:
    """Run ``line`` with stdout and stderr sent to ``log``, as ``> log 2>&1`` does; its exit code and output."""
    with log.open("wb") as out:
        proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=_TIMEOUT_S)  # fmt: skip
    return proc.returncode, log.read_text("utf-8", "replace")


def run_all(mode: str, root: Path, mirror: Path) -> list[Result]:
    repo = scratch_repository(root, mirror)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    env |= {"QUANTLIGHT_MIRROR": str(mirror), "OMP_NUM_THREADS": "1"}  # two runs side by side: a core each
    env |= {"VIRTUAL_ENV": str(repo / ".venv"), "PATH": f"{repo / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    results = []
    for i, command in enumerate(COMMANDS):
        start = time.perf_counter()
        if mode == "terminal":
            code, output = run_in_terminal(command.to_run(), repo, env)
        else:
            code, output = run_piped(command.to_run(), repo, env, root / f"command-{i}.log")
        results.append(Result(code, output, time.perf_counter() - start))
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[Result]]:
    mirror = mirror_path()
    with ThreadPoolExecutor(len(MODES)) as pool:
        runs = {mode: pool.submit(run_all, mode, tmp_path_factory.mktemp(mode), mirror) for mode in MODES}
        return {mode: run.result() for mode, run in runs.items()}


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[c.where for c in COMMANDS])
def test_readme_command_exits_zero(results: dict[str, list[Result]], mode: str, index: int, record_property):
    command, result = COMMANDS[index], results[mode][index]
    shown = command.line if command.quick is None else f"{command.line}  [quick run: {command.quick}]"
    record_property(README_COMMAND, (index, mode, result.returncode, round(result.seconds), command.where, shown))
    tail = result.output[-3000:]
    assert result.returncode == 0, f"{command.to_run()}\n{tail}"
    assert "Traceback" not in result.output, f"{command.to_run()}\n{tail}"
