"""What the console shows a user: upstream messages that are noise to them are dropped.

Imported by ``cli.py`` before torch and Lightning load, since some of these are emitted at import.
"""

from __future__ import annotations

import logging
import warnings

# Lightning 2.6 calls APIs that torch 2.14 and jsonargparse 4.49+ deprecate: a user can do nothing about them.
_DEPRECATIONS = [
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r".*was deprecated in v4", DeprecationWarning),
    (r"skip_none parameter was deprecated", DeprecationWarning),
]
# Log records that advertise or state the obvious: (logger, message prefix).
_RECORDS = [
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip:"),  # an advertisement for a cloud logger
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),  # the CUDA wheel on a CPU-only machine
]


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_upstream_noise() -> None:
    """Drop the deprecation warnings and log records above (each once, however often it is called)."""
    for message, category in _DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in _RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))


quiet_upstream_noise()
