"""MkDocs hooks: pages generated from the code, so the docs cannot drift from it.

- ``reference/configuration.md``: the settings table, from ``Settings``' fields (name, default,
  description), in place of its ``settings-table`` marker.
"""

from __future__ import annotations

from typing import Any

MARKER = (
    "<!-- settings-table: generated from eqs_reward.server.settings.Settings by docs/hooks.py -->"
)


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return "(computed)"
    if field.default is None:
        return "unset"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def settings_table() -> str:
    from eqs_reward.server.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `EQS_REWARD_{name.upper()}` | {_default(field)} | {description} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, settings_table())
    return markdown
