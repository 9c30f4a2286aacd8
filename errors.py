"""User-facing errors: a mistake in the user's data, checkpoint or config.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class QuantlightError(Exception):
    """Base class for errors caused by the user's input, with a message that names the fix."""


class DataError(QuantlightError):
    """Data files are missing, truncated, malformed or inconsistent with the config."""


class CheckpointError(QuantlightError):
    """A checkpoint is missing, unreadable, or belongs to another model or data setup."""


class NonFiniteLossError(QuantlightError):
    """Training produced a NaN or infinite loss; checkpoints written before it are kept."""


class ConfigError(QuantlightError):
    """A constructor refused a value from the config or the command line."""
