"""Real shopper queries, shipped inside the package: WANDS (MIT) and ESCI (Apache-2.0); see
``eqs_reward/_data/queries/SOURCES.md``. The contexts of the load generator, the trainer and the
miner. ``EQS_REWARD_QUERIES_DIR`` points at another folder of the same two files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from eqs_reward._resources import queries_dir

__all__ = ["HELD_OUT", "load_queries", "queries_folder", "split_queries"]


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


#: Held-out real queries for the per-stage evaluation: never trained on.
HELD_OUT = 48


def split_queries(train: int, held_out: int, seed: int) -> tuple[list[str], list[str]]:
    """Training queries and held-out queries, disjoint, from the packaged real queries (2 to 6
    words: what a shopper types into an assistant)."""
    queries = [q for q in load_queries() if 2 <= len(q.split()) <= 6]
    random.Random(seed).shuffle(queries)
    if train + held_out > len(queries):
        raise ValueError(f"{train} + {held_out} queries asked, {len(queries)} available")
    return queries[:train], queries[len(queries) - held_out :]
