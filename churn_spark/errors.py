"""Domain errors: each carries one line a user can act on; the CLI prints it and exits non-zero."""

from __future__ import annotations


class ChurnSparkError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""


class ConfigError(ChurnSparkError):
    """The configuration (file or flags) is invalid."""


class EnvironmentProblem(ChurnSparkError):
    """Something the machine must provide is missing (Java, a jar, a server)."""


class ContractError(ChurnSparkError):
    """An input or output table does not match its declared schema."""


class NotAvailableError(ChurnSparkError):
    """A command or model that does not exist (yet)."""


class PromotionError(ChurnSparkError):
    """The new model could not be compared with the current one: it is kept, not promoted."""
