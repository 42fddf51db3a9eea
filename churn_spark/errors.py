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


class InputCheckError(ContractError):
    """An input check failed (ids that do not join, a data-quality check): `result` holds what was measured,
    so the run summary records it beside the one-line error."""

    def __init__(self, message: str, result: dict[str, object]) -> None:
        super().__init__(message)
        self.result = result
