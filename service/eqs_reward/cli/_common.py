"""What every command shares: the extras check, logging, settings."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys
import types
import typing
from typing import Any

log = logging.getLogger("eqs_reward.cli")

# The modules each extra brings, checked before a command imports them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "pydantic_settings", "redis", "prometheus_client", "sklearn"),
    "embedded": ("vllm", "transformers", "safetensors", "gguf"),
    "train": ("trl", "datasets", "transformers", "matplotlib"),
    "eval": ("sklearn", "matplotlib"),
    "ray": ("ray",),
}
DEFAULT_URL = "http://127.0.0.1:8000"


class MissingExtra(SystemExit):
    """A command needs an extra that is not installed (exit status 2, with the pip line)."""

    def __init__(self, extra: str, command: str, missing: list[str], hint: str = "") -> None:
        message = (
            f"eqs-reward {command} needs the '{extra}' extra (missing: {', '.join(missing)}): "
            f"pip install 'eqs-reward[{extra}]'{hint}"
        )
        print(message, file=sys.stderr)
        super().__init__(2)


def require(extra: str, command: str, hint: str = "") -> None:
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(extra, command, missing, hint)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per judge call drowns the log at training rates; failures are logged by us.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def settings_with(**overrides: Any) -> Any:
    require("server", "this command")
    from eqs_reward.server.settings import Settings

    return Settings(**overrides)


def _flag(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("flag") or "--" + field.name.replace("_", "-"))


def _dest(field: dataclasses.Field[Any]) -> str:
    return _flag(field)[2:].replace("-", "_")


def add_options(
    parser: argparse.ArgumentParser, options: type, skip: tuple[str, ...] = (), **defaults: Any
) -> None:
    """One option per documented field of an options dataclass (``offline.options.option``):
    its flag, type, choices, default and help all come from the field, so the command line and
    the dataclass cannot disagree. A flag the parser already has (a field two dataclasses
    share, like ``--url``) is added once; ``skip`` names fields a command does not offer;
    ``defaults`` override a field's default."""
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):
        if "help" not in field.metadata or field.name in skip:
            continue
        kind = hints[field.name]
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) in (types.UnionType, typing.Union):
            kind = inner[0]
        default = defaults.get(field.name, field.default)
        kwargs: dict[str, Any] = {"dest": _dest(field), "help": field.metadata["help"]}
        if kind is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(kind) is typing.Literal:
            kwargs.update(choices=list(typing.get_args(kind)), default=default)
        else:
            kwargs.update(type=kind, default=default)
        try:
            parser.add_argument(_flag(field), **kwargs)
        except argparse.ArgumentError:  # the flag is there already: a field two share (--url)
            continue


def options_from(args: argparse.Namespace, options: type, **values: Any) -> Any:
    """An options dataclass from the parsed arguments its documented fields generated (an
    undocumented field keeps its default; ``values`` win)."""
    given = {
        field.name: getattr(args, _dest(field))
        for field in dataclasses.fields(options)
        if "help" in field.metadata and hasattr(args, _dest(field))
    }
    return options(**{**given, **values})
