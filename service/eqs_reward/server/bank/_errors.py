"""What the bank stores raise; the bank service turns each into its HTTP error."""

from __future__ import annotations

__all__ = [
    "BankUnavailableError",
    "ExampleNotFoundError",
    "StaleVersionError",
    "VersionNotFoundError",
]


class VersionNotFoundError(LookupError):
    """The requested few-shot version does not exist."""


class StaleVersionError(Exception):
    """``expected_version`` is not the active version any more (someone else wrote first)."""

    def __init__(self, expected: int, active: int) -> None:
        super().__init__(f"expected_version {expected} is stale: the active version is {active}")
        self.expected = expected
        self.active = active


class BankUnavailableError(RuntimeError):
    """The store cannot be reached, or has lost its data (503)."""


class ExampleNotFoundError(LookupError):
    """The example is not in the active version."""
