"""JSON Lines, read and written in one place: every reader names the file and line of a bad row;
and a plain record's JSON object (``record``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A row that is not a JSON object; the message names ``path:line``."""


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; ``JsonlError`` on the first bad one."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(f"{path}:{number}: not JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise JsonlError(
                    f"{path}:{number}: expected a JSON object, got {type(row).__name__}"
                )
            yield number, row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSONL file (see ``iter_jsonl``)."""
    return [row for _, row in iter_jsonl(path)]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as UTF-8 JSON Lines (non-ASCII kept readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def record(obj: Any) -> dict[str, Any]:
    """A slotted dataclass's fields by name, in declaration order, values as they are (nothing
    copied or converted): the JSON object of a plain record (a score, a catalog row)."""
    return {name: getattr(obj, name) for name in obj.__slots__}
