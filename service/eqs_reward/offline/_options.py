"""Fields of the offline tools' option dataclasses that carry their own command-line help.

An options dataclass (``TrainOptions``, ``MineOptions``, ``WarmStartOptions``) is the one place
a setting's default and help are written: ``eqs_reward.cli`` generates each command's options
from its fields (``option(..., flag=...)`` when the flag is not ``--field-name``)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["option"]


def option(default: Any, help: str, *, flag: str | None = None) -> Any:
    """A dataclass field with ``default``, documented by ``help`` on the command line."""
    metadata = {"help": help} if flag is None else {"help": help, "flag": flag}
    return field(default=default, metadata=metadata)
