"""Start-up: ``python cli.py --help`` loads no library it does not use, and torchmetrics, its package ``__init__``
deferred by ``deferred_imports``, is whole and the same when used. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

# Loaded by a subcommand that uses them (reading MNIST, a text corpus, the engine after fit), never by `--help`.
NOT_AT_START_UP = [
    "torchvision", "scipy.signal", "scipy.stats", "scipy.sparse", "onnxruntime", "onnx", "sklearn",
    "torch.utils.tensorboard", "quantization", "datamodules.mnist", "datamodules.text",
]  # fmt: skip


def fresh(code: str):
    """The JSON value a fresh interpreter in the repository prints last."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_cli_help_loads_none_of_the_libraries_it_does_not_use():
    code = (
        "import json, sys\n"
        "import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([sorted(set({NOT_AT_START_UP!r}) & set(sys.modules)), 'lightning.pytorch' in sys.modules]))"
    )
    loaded, lightning = fresh(code)
    assert lightning  # the help was built: Lightning, and torchmetrics with it, were imported
    assert loaded == []


def test_torchmetrics_used_after_a_deferred_import_is_the_package_a_plain_import_gives():
    def package(deferred: bool) -> dict:
        code = (
            "import json, logging, sys\n"
            + ("import deferred_imports\n" if deferred else "")
            + "import lightning.pytorch, torch, torchmetrics\n"
            "deferred = 'torchvision' not in sys.modules and 'scipy.signal' not in sys.modules\n"
            "preds, target = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])\n"
            "acc = torchmetrics.Accuracy(task='multiclass', num_classes=3)(preds, target).item()\n"
            "functional = torchmetrics.functional.accuracy(preds, target, task='multiclass', num_classes=3).item()\n"
            "print(json.dumps({'deferred': deferred, 'acc': [acc, functional], 'version': torchmetrics.__version__,\n"
            "    'names': sorted(vars(torchmetrics)), 'functional_names': sorted(vars(torchmetrics.functional)),\n"
            "    'handlers': len(logging.getLogger('torchmetrics').handlers), 'dir': 'Accuracy' in dir(torchmetrics)}))"
        )
        return fresh(code)

    deferred, plain = package(deferred=True), package(deferred=False)
    assert deferred.pop("deferred") is True
    assert plain.pop("deferred") is False, "torchmetrics no longer imports torchvision or scipy.signal: drop the hook"
    assert deferred["acc"] == [0.75, 0.75]
    assert deferred == plain


def test_the_collector_is_back_on_after_the_cli_imports_and_frees_cycles():
    code = (
        "import gc, json, weakref\n"
        "import cli\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"  # a cycle made after start-up
        "gone = weakref.ref(a); del a, b\n"
        "for _ in range(3): [[] for _ in range(100_000)]\n"  # allocations enough for collections to run on their own
        "print(json.dumps([gc.isenabled(), gc.get_freeze_count() > 100_000, gone() is None]))"
    )
    assert fresh(code) == [True, True, True]
