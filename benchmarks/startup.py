"""Start-up seconds: ``python cli.py --help``, importing the main modules, and a ``fit`` up to its first epoch.

    python benchmarks/startup.py                        # this checkout, 5 fresh processes per row, medians
    python benchmarks/startup.py --baseline <checkout>  # and another checkout (e.g. an older commit) beside it
    python benchmarks/startup.py --quick                # 2 processes per row

Each row runs in fresh processes (a module imported once stays imported), so it is what a user waits for. The first
rows are the floor every row stands on: the interpreter, torch, and ``torch._dynamo`` (Lightning imports it). The
``fit`` row is ``cli.py fit -c configs/mnist_logistic.yaml`` on the data mirror, progress bar off, timed from the
process's launch to its first training epoch's start; the process stops there (the report after fit is not
start-up). Wall seconds on a shared machine vary with the other jobs: compare rows of the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("QUANTLIGHT_MIRROR", REPO.parent / "shared" / "data"))
FIRST_EPOCH = "first training epoch at "
FLOOR = {
    "python (nothing)": "pass",
    "import torch": "import torch",
    "import torch, torch._dynamo": "import torch._dynamo",
}
# Project modules, each imported after the modules cli.py imports first (those the checkout has).
MODULES = ["cli", "trainer", "modules", "datamodules.mnist", "datamodules.text", "callbacks.post_training_quantization"]
FIRST = ["console", "deferred_imports"]


class FirstEpochClock(Callback):
    """Prints the wall clock at the first training epoch's start and ends the process there."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        print(f"{FIRST_EPOCH}{time.time()}", flush=True)
        os._exit(0)  # the rest of the run is not start-up


def seconds(command: list[str], repo: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process; wall to its first epoch when it prints one (:class:`FirstEpochClock`).

    CPU seconds (user + system, the process's whole life) are steadier than wall when other jobs share the cores.
    """
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo}:\n{done.stderr[-2000:]}")
    marks = [line for line in done.stdout.splitlines() if line.startswith(FIRST_EPOCH)]
    wall = (float(marks[0][len(FIRST_EPOCH) :]) if marks else end) - start
    return wall, (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


def commands(repo: Path, out: str) -> dict[str, list[str]]:
    """The rows' command lines for one checkout."""
    python = sys.executable
    rows = {name: [python, "-c", code] for name, code in FLOOR.items()}
    rows["python cli.py --help"] = [python, "cli.py", "--help"]
    first = [m for m in FIRST if (repo / f"{m}.py").exists()]
    rows |= {f"import {m}": [python, "-c", f"import {', '.join([*first, m])}"] for m in MODULES}
    rows["fit MNIST, to its first epoch"] = [
        python, "cli.py", "fit", "-c", "configs/mnist_logistic.yaml", "--data.data_dir", str(MIRROR),
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", out, "--trainer.callbacks+=startup.FirstEpochClock",
    ]  # fmt: skip
    return rows


def timings(repos: list[Path], runs: int) -> dict[Path, dict[str, list[tuple[float, float]]]]:
    """(wall, CPU) seconds per checkout and row, ``runs`` fresh processes each; checkouts and rows interleaved, so
    drift on a busy machine spreads over all of them."""
    # startup.FirstEpochClock is this file, whichever checkout runs.
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(prefix="startup-") as out:
        rows = {repo: commands(repo, out) for repo in repos}
        times = {repo: {name: [] for name in rows[repo]} for repo in repos}
        for _ in range(runs):
            for name in rows[repos[0]]:
                for repo in repos:
                    times[repo][name].append(seconds(rows[repo][name], repo, env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="Another checkout (e.g. an older commit) timed beside this one.")
    parser.add_argument("--runs", type=int, default=5, help="Fresh processes per row and checkout (default 5).")
    parser.add_argument("--quick", action="store_true", help="2 processes per row.")
    args = parser.parse_args()
    runs = 2 if args.quick else args.runs
    repos = [args.baseline.resolve(), REPO] if args.baseline else [REPO]
    times = timings(repos, runs)
    print(
        f"Start-up, seconds: median of {runs} fresh processes, wall (min-max) and CPU; "
        + ", ".join(f"{'baseline' if repo != REPO else 'this checkout'}: {repo}" for repo in repos)
    )
    heads = [("baseline " if repo != REPO else "") + f"{kind}" for repo in repos for kind in ("wall s", "CPU s")]
    print(f"| what | {' | '.join(heads)} |\n|---|{'---|' * len(heads)}")
    for name in times[REPO]:
        cells = []
        for repo in repos:
            wall, cpu = zip(*times[repo][name], strict=True)
            cells += [
                f"{statistics.median(wall):.2f} ({min(wall):.2f}-{max(wall):.2f})",
                f"{statistics.median(cpu):.2f}",
            ]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
