"""One scheme for ``loadtest/RESULTS.md``: every benchmark command rewrites only its own sections,
each stamped with its date, command and machine, so one benchmark's rerun never drops another's
figures (and a later issue adds a section without touching the rest)."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the command it names, on the machine it names; ratios inside a "
    "section come from runs made side by side in that one invocation (the machines are shared "
    "and noisy: compare within a section, not across sections).\n"
)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


def section(key: str, title: str, body: str, command: str) -> str:
    """A section's text between its markers, stamped with when, how and where it was measured."""
    stamp = (
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: `{command}`\n"
        f"- machine: {machine()}\n"
    )
    return f"<!-- section:{key} -->\n## {title}\n\n{stamp}\n{body.strip()}\n<!-- /section:{key} -->"


def _pattern(key: str) -> re.Pattern[str]:
    return re.compile(
        rf"<!-- section:{re.escape(key)} -->.*?<!-- /section:{re.escape(key)} -->", re.S
    )


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace each of ``sections`` (key -> text from ``section``) in place, or append it; every
    other section stays as it was. A file from before this scheme (no markers) starts afresh."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if "<!-- section:" not in text:
        text = HEADER
    for key, block in sections.items():
        found = _pattern(key).search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
