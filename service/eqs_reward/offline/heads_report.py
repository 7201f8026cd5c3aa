"""Measure the exclusivity head on real shopper queries (``eqs-reward heads-report``).

The head turns a cosine similarity into a distance by a ramp between ``low`` and ``high``
(``ExclusivityHead``). Those bounds are chosen here, from sets built around real queries
(WANDS, ESCI; packaged):

- **paraphrase sets**: three wordings of one question about the query ("Which sofas are the
  best?", "What are the best sofas?", ...): the near-duplicate lists GQR's exclusivity grades down;
- **varied sets**: three questions about different aspects of the query (price, brand, colour or
  material, size or use, delivery);
- **echoes** of the query ("Can you show me sofas?") against **refinements** that add
  constraints ("Which sofas under $80 have a five-year warranty?").

The rule: ``low`` is the 90th percentile of the similarities within varied sets (rounded down to
0.05): nine varied pairs in ten count as fully distinct; ``high`` the 10th percentile within
paraphrase sets (rounded up): nine paraphrase pairs in ten count as duplicates. Then the report
scores both kinds of set and both kinds of suggestion with the chosen ramp (means and ROC AUC), and
the novelty signal against the information-gain labels of labelled judge cases, when given.
Templates make these sets cleaner than a policy's output: the numbers say the head separates the
two kinds, not how often a policy produces either.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eqs_reward._jsonl import read_jsonl
from eqs_reward.evaluation import roc_auc
from eqs_reward.judge.cases import Context, LabeledCase
from eqs_reward.offline.data import load_queries
from eqs_reward.server.heads import Embedder, ExclusivityHead

__all__ = ["choose_ramp", "measure_exclusivity", "render_markdown"]

PARAPHRASES = (
    ("Which {q} are the best?", "What are the best {q}?", "What is the best {q} to buy?"),
    ("Do you have {q} under $50?", "Any {q} below $50?", "Which {q} cost less than $50?"),
    (
        "Which {q} are best for a small apartment?",
        "What {q} fit a small apartment?",
        "Any {q} good for small apartments?",
    ),
    (
        "Which {q} come with free shipping?",
        "Do any {q} ship for free?",
        "Can I get {q} with free delivery?",
    ),
)
ASPECTS = (
    ("Do you have {q} under $50?", "Which {q} cost less than $100?"),
    ("Which brands of {q} have the longest warranty?", "Are there {q} from IKEA or Wayfair?"),
    ("Are there {q} in navy blue?", "Do any {q} come in solid oak?"),
    ("Which {q} fit a small apartment?", "What size of {q} suits a family of four?"),
    ("Which {q} can be delivered by Friday?", "Do any {q} come assembled?"),
)
ECHOES = ("Can you show me {q}?", "I want to buy {q}.", "What kind of {q} do you want?")
REFINEMENTS = (
    "Which {q} under $80 have a five-year warranty?",
    "Are there {q} in navy blue that fit a small apartment?",
    "What {q} are waterproof and good for outdoor use?",
)
PERCENTILES = (5, 10, 25, 50, 75, 90, 95)


def _queries(count: int, seed: int) -> list[str]:
    queries = [q for q in load_queries() if 1 <= len(q.split()) <= 4 and q.isascii()]
    random.Random(seed).shuffle(queries)
    return queries[:count]


def _ctx(query: str) -> Context:
    return Context(query=query)


def choose_ramp(paraphrase: Sequence[float], varied: Sequence[float]) -> tuple[float, float]:
    """The rule of the module docstring; a 0.05-wide ramp at the midpoint if the two overlap."""
    low = math.floor(float(np.percentile(varied, 90)) * 20 + 1e-9) / 20
    high = math.ceil(float(np.percentile(paraphrase, 10)) * 20 - 1e-9) / 20
    if low >= high:
        middle = (low + high) / 2
        low, high = middle - 0.025, middle + 0.025
    return round(low, 4), round(high, 4)


def _pairs(matrix: Any) -> list[float]:
    n = matrix.shape[0]
    return [float(matrix[a, b]) for a in range(n) for b in range(a + 1, n)]


async def measure_exclusivity(
    embedder: Embedder,
    *,
    queries: int = 300,
    seed: int = 5,
    cases_path: Path | None = None,
) -> dict[str, Any]:
    """Similarities, the chosen ramp and what the head gives with it (see the docstring)."""
    rng = random.Random(seed + 2)
    chosen = _queries(queries, seed)
    paraphrase_sets = [[t.format(q=q) for t in rng.choice(PARAPHRASES)] for q in chosen]
    varied_sets = [
        [rng.choice(aspect).format(q=q) for aspect in rng.sample(ASPECTS, 3)] for q in chosen
    ]
    sims: dict[str, list[float]] = {"paraphrase": [], "varied": [], "echo": [], "refined": []}
    for paraphrases, varied in zip(paraphrase_sets, varied_sets, strict=True):
        sims["paraphrase"] += _pairs((v := await embedder.embed(paraphrases)) @ v.T)
        sims["varied"] += _pairs((v := await embedder.embed(varied)) @ v.T)
    for query in chosen:
        texts = [query, *(t.format(q=query) for t in (*ECHOES, *REFINEMENTS))]
        vectors = await embedder.embed(texts)
        to_query = [float(x) for x in vectors[1:] @ vectors[0]]
        sims["echo"] += to_query[: len(ECHOES)]
        sims["refined"] += to_query[len(ECHOES) :]
    low, high = choose_ramp(sims["paraphrase"], sims["varied"])
    head = ExclusivityHead(embedder, low=low, high=high)

    scored = await head.score([(_ctx(q), s) for q, s in zip(chosen, paraphrase_sets, strict=True)])
    para_div = [signals["diversity"] for _, signals in scored]
    scored = await head.score([(_ctx(q), s) for q, s in zip(chosen, varied_sets, strict=True)])
    varied_div = [signals["diversity"] for _, signals in scored]
    probes = [
        (_ctx(q), [t.format(q=q)]) for q in chosen for t in (*ECHOES, *REFINEMENTS)
    ]  # one suggestion per set: novelty only
    novelty = [per[0]["novelty"] for per, _ in await head.score(probes)]
    novelty_labels = ([0] * len(ECHOES) + [1] * len(REFINEMENTS)) * len(chosen)
    echo = [v for v, y in zip(novelty, novelty_labels, strict=True) if not y]
    refined = [v for v, y in zip(novelty, novelty_labels, strict=True) if y]

    report: dict[str, Any] = {
        "embedder": embedder.name,
        "queries": len(chosen),
        "seed": seed,
        "similarity_percentiles": {
            kind: {str(p): round(float(np.percentile(values, p)), 3) for p in PERCENTILES}
            for kind, values in sims.items()
        },
        "ramp": {"low": low, "high": high},
        "diversity": {
            "paraphrase_mean": round(float(np.mean(para_div)), 3),
            "varied_mean": round(float(np.mean(varied_div)), 3),
            "roc_auc": round(
                roc_auc([0] * len(para_div) + [1] * len(varied_div), para_div + varied_div), 3
            ),
        },
        "novelty": {
            "echo_mean": round(float(np.mean(echo)), 3),
            "refined_mean": round(float(np.mean(refined)), 3),
            "roc_auc": round(roc_auc(novelty_labels, novelty), 3),
        },
    }
    if cases_path is not None and cases_path.is_file():
        cases = [LabeledCase.model_validate(row) for row in read_jsonl(cases_path)]
        items = [(c.context, [c.suggestion]) for c in cases]
        scores = [per[0]["novelty"] for per, _ in await head.score(items)]
        labels = [c.labels.information_gain for c in cases]
        report["labelled_cases"] = {
            "path": cases_path.name,
            "n": len(cases),
            "information_gain_positive": sum(labels),
            "novelty_roc_auc": round(roc_auc(labels, scores), 3),
        }
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as the docs show it."""
    p = report["similarity_percentiles"]
    lines = [
        f"Embedder `{report['embedder']}`, {report['queries']} real queries "
        f"(seed {report['seed']}).",
        "",
        "| cosine similarity | " + " | ".join(f"p{k}" for k in PERCENTILES) + " |",
        "|---|" + "---|" * len(PERCENTILES),
    ]
    names = {
        "paraphrase": "pairs within paraphrase sets",
        "varied": "pairs within varied sets",
        "echo": "echo of the query, to the query",
        "refined": "refinement, to the query",
    }
    for kind, label in names.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{p[kind][str(k)]:.3f}" for k in PERCENTILES) + " |"
        )
    d, n, r = report["diversity"], report["novelty"], report["ramp"]
    lines += [
        "",
        f"Chosen ramp: low {r['low']}, high {r['high']}.",
        "",
        "| with that ramp | low kind | high kind | ROC AUC |",
        "|---|---|---|---|",
        f"| set diversity: paraphrase vs varied sets | {d['paraphrase_mean']:.3f} | "
        f"{d['varied_mean']:.3f} | {d['roc_auc']:.3f} |",
        f"| novelty: echo vs refinement | {n['echo_mean']:.3f} | {n['refined_mean']:.3f} | "
        f"{n['roc_auc']:.3f} |",
    ]
    if "labelled_cases" in report:
        c = report["labelled_cases"]
        lines += [
            "",
            f"Novelty against the information-gain labels of `{c['path']}` ({c['n']} cases, "
            f"{c['information_gain_positive']} positive): ROC AUC {c['novelty_roc_auc']:.3f}.",
        ]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "exclusivity.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "exclusivity.md").write_text(render_markdown(report))
