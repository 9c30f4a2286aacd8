"""One file per quantization method; importing this package registers every one of them."""

import importlib
import pkgutil

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
    if not _module.name.startswith("_"):  # _shared helpers register nothing
        importlib.import_module(f"{__name__}.{_module.name}")
