"""Real shopper queries, shipped inside the package: WANDS (MIT) and ESCI (Apache-2.0); see
``eqs_reward/_data/queries/SOURCES.md``. The contexts of the load generator, the trainer and the
miner. ``EQS_REWARD_QUERIES_DIR`` points at another folder of the same two files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from eqs_reward._resources import queries_dir

__all__ = ["load_queries", "queries_folder"]


def queries_folder() -> Path:
    explicit = os.environ.get("EQS_REWARD_QUERIES_DIR", "").strip()
    return Path(explicit) if explicit else queries_dir()


def load_queries(limit: int | None = None, folder: Path | None = None) -> list[str]:
    """Distinct real shopper queries, WANDS first, then ESCI."""
    folder = folder or queries_folder()
    queries: list[str] = []
    wands = folder / "wands_queries.tsv"
    if wands.is_file():
        for line in wands.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1].strip():
                queries.append(parts[1].strip())
    esci = folder / "esci_us_queries.json"
    if esci.is_file():
        data = json.loads(esci.read_text(encoding="utf-8"))
        queries += [q["queryText"].strip() for q in data.get("querySetQueries", [])]
    if not queries:
        raise FileNotFoundError(
            f"no shopper queries in {folder} (wands_queries.tsv, esci_us_queries.json)"
        )
    queries = list(dict.fromkeys(queries))
    return queries[:limit] if limit else queries
