"""torchmetrics' package ``__init__`` files run when one of their attributes is first read, not at import.

Lightning imports torchmetrics at start-up (for ``Metric``), and torchmetrics' own ``__init__`` files import every
metric domain it has: scipy.signal (a back-compatibility patch for an audio library) and torchvision (an image
metric's model), which nothing here uses (torchmetrics issue #3457). Importing Lightning took 5.1 s of CPU with
them, 3.9 s without (2-core machine; ``benchmarks/startup.py`` times the whole start-up). ``cli.py`` imports this
module before Lightning: ``import torchmetrics`` and ``import torchmetrics.functional`` then give the package
without running its ``__init__``. Its submodules (``torchmetrics.classification``...) import as usual, the names
Lightning reads (``Metric``, ``MetricCollection``, ``__version__``) come from the submodules that define them, and
reading any other attribute of the package runs its real ``__init__`` first, so every name is there, unchanged,
when used. (matplotlib still loads: ``torchmetrics.metric`` imports it for its plots' type aliases.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from types import ModuleType

# Package -> {name: the submodule that defines it}: the names read without running the package's __init__.
_CHEAP_NAMES = {
    "torchmetrics": {
        "Metric": "torchmetrics.metric",
        "MetricCollection": "torchmetrics.collections",
        "__version__": "torchmetrics.__about__",
    },
    "torchmetrics.functional": {},
}
# torchmetrics.utilities imports torchmetrics.metric, which imports torchmetrics.utilities' submodules: entered at
# torchmetrics.metric the cycle fails, so the utilities load first, as in torchmetrics' own __init__.
_FIRST = {"torchmetrics": "torchmetrics.utilities"}
_LOCK = threading.RLock()


def _configure_logger() -> logging.Handler:
    # torchmetrics/__init__ sets up the `_logger` its utilities.prints reads; the same here until that __init__ runs.
    logger = logging.getLogger("torchmetrics")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


class _DeferredInitLoader(importlib.abc.Loader):
    """Creates the package as its own loader would, and leaves its ``__init__`` to the first attribute read."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, attr: str):  # get_source, get_resource_reader... as the package's own loader
        return getattr(self.loader, attr)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        name, loader = module.__name__, self.loader
        handler = _configure_logger() if name == "torchmetrics" else None
        if handler is not None:
            module._logger = logging.getLogger("torchmetrics")

        def run_init() -> None:
            with _LOCK:
                if module.__dict__.pop("__getattr__", None) is None:
                    return  # another thread ran it
                del module.__dir__
                if handler is not None:  # the real __init__ adds its own
                    module._logger.removeHandler(handler)
                loader.exec_module(module)

        def __getattr__(attr: str):
            if attr in _CHEAP_NAMES[name]:
                if name in _FIRST:
                    importlib.import_module(_FIRST[name])
                return getattr(importlib.import_module(_CHEAP_NAMES[name][attr]), attr)
            if not attr.startswith("__") and importlib.util.find_spec(f"{name}.{attr}") is not None:
                return importlib.import_module(f"{name}.{attr}")  # `from torchmetrics import classification`
            run_init()
            return getattr(module, attr)

        def __dir__() -> list[str]:
            run_init()
            return sorted(module.__dict__)

        module.__getattr__ = __getattr__
        module.__dir__ = __dir__


class _DeferredInitFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _CHEAP_NAMES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _DeferredInitLoader(spec.loader)
        return spec


def defer_package_inits() -> None:
    """Install the finder (once; before torchmetrics is imported, or it has no effect)."""
    if not any(isinstance(finder, _DeferredInitFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DeferredInitFinder())


defer_package_inits()
