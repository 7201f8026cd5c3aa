"""The files shipped inside the package, read through ``importlib.resources`` so an installed
wheel needs no source tree: judge prompt templates, the seed few-shot bank, the real shopper
queries. In a source checkout ``_data/prompts`` and ``_data/fewshot_bank`` link to the top-level
folders people edit; the build copies their content into the wheel."""

from __future__ import annotations

from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["demo_dir", "fewshot_seed_dir", "judge_cases_dir", "prompts_dir", "queries_dir"]


def _packaged(name: str) -> Traversable:
    return files("eqs_reward._data").joinpath(name)


def _as_path(resource: Traversable) -> Path:
    # Wheels install unpacked, so this is the real folder; as_file also covers zip imports.
    with as_file(resource) as path:
        return Path(path)


def prompts_dir() -> Path:
    """The packaged judge prompt templates (``prompts/*.toml``)."""
    return _as_path(_packaged("prompts"))


def fewshot_seed_dir() -> Path:
    """The packaged seed few-shot bank (``fewshot_bank/*.jsonl``): version 1 of a new bank."""
    return _as_path(_packaged("fewshot_bank"))


def queries_dir() -> Path:
    """The packaged real shopper queries (WANDS and ESCI; see ``SOURCES.md`` there)."""
    return _as_path(_packaged("queries"))


def demo_dir() -> Path:
    """The project's demo catalog and click logs (synthetic; ``eqs_reward.offline.demo``)."""
    return _as_path(_packaged("demo"))


def judge_cases_dir() -> Path:
    """The packaged labeled cases: ``train.jsonl`` and ``train_extra.jsonl`` (the taught head
    fits on them, minus held-out queries) and ``dev.jsonl`` (validation only, never fit on);
    see ``SOURCES.md`` there."""
    return _as_path(_packaged("judge_cases"))
