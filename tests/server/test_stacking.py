"""The stacking's recipe file (``eqs_reward.server.heads.stacking``): versions."""

from __future__ import annotations

import tomllib
from pathlib import Path

from eqs_reward._resources import prompts_dir
from eqs_reward.server.heads.stacking import _next_version
from eqs_reward.types import DIMENSIONS


def test_a_refit_that_changes_the_stacking_is_a_new_recipe_version(tmp_path: Path) -> None:
    path = tmp_path / "qualeqs-taught.toml"
    assert _next_version(path, {}, 0) == 1
    assert _next_version(path, {}, 3) == 4  # a service's first refit of shipped version 3
    path.write_text((prompts_dir() / "recipes" / "qualeqs-taught.toml").read_text())
    shipped = tomllib.loads(path.read_text())
    current = shipped["version"]
    terms = dict(zip(DIMENSIONS, shipped["suggestion_reward"]["product"], strict=True))
    assert _next_version(path, terms, 0) == current
    moved = {d: {"stacked": {**t["stacked"], "threshold": 0.42}} for d, t in terms.items()}
    assert _next_version(path, moved, 0) == current + 1
    assert _next_version(path, moved, current + 5) == current + 6
