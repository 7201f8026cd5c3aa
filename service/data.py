"""Real shopper queries shipped beside the project (../shared/data): WANDS (MIT) and ESCI
(Apache-2.0); see ../shared/data/SOURCES.md. Used as contexts by the load generator, the GRPO
trainer and the miner."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_dir() -> Path:
    return Path(os.environ.get("EQS_REWARD_QUERIES_DIR", DEFAULT_DATA_DIR))


def load_queries(limit: int | None = None, folder: Path | None = None) -> list[str]:
    """Distinct real shopper queries, WANDS first, then ESCI; a few stand-ins if absent."""
    folder = folder or data_dir()
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
        queries = ["salon chair", "smart coffee table", "turquoise pillows", "router", "flowers"]
    queries = list(dict.fromkeys(queries))
    return queries[:limit] if limit else queries
