"""The one loader of versioned TOML files (judge prompts, guard rules, reward recipes): a file
``<id>.toml`` whose ``id`` key names it, so a version is never read from a file of another name.
Each caller passes its own error type, so its users see one exception family per kind of file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["VERSION_ID", "load_versioned", "read_versioned"]

#: What a version id may be (it names a file: no path separators, no leading dot).
VERSION_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def read_versioned(path: Path, error: type[Exception], what: str) -> dict[str, Any]:
    """The TOML at ``path``, whose ``id`` must be the file's stem (``error`` otherwise)."""
    if not path.is_file():
        raise error(f"no {what} {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: {exc}") from exc
    if data.get("id") != path.stem:
        raise error(f"{path}: id {data.get('id')!r} does not match the file name")
    return data


def load_versioned(folder: Path, version: str, error: type[Exception], what: str) -> dict[str, Any]:
    """Version ``version`` of a kind of file kept in ``folder`` as ``<version>.toml``."""
    if not VERSION_ID.match(version):
        raise error(f"invalid {what} version id {version!r}")
    return read_versioned(folder / f"{version}.toml", error, what)
