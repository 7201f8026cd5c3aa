"""Realistic GRPO reward traffic, built from real shopper queries (../shared/data).

One request is one GRPO group: G completions of one prompt, each a policy's raw
``{"options": [...]}`` with k suggestions. A policy sampled G times on one prompt repeats
itself: each suggestion is drawn from a per-prompt pool with Zipf-like weights, so popular
phrasings recur within a group and across training steps (the same prompts come back every
epoch). ``pool`` and ``zipf`` set how much; the generator reports the repetition it produced.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eqs_reward.offline.data import load_queries

_TEMPLATES = [
    "Which {q} are under ${price}?",
    "Do you have {q} from {brand}?",
    "Is there a {q} with {feature}?",
    "What {q} works best for {scenario}?",
    "Are there {color} {q} in stock?",
    "Any {q} under ${price} with {feature}?",
    "Can I get {q} delivered by {day}?",
    "Which {q} have a {years}-year warranty?",
]
_FILL = {
    "price": ["25", "50", "80", "120", "200", "350"],
    "brand": ["IKEA", "Samsung", "Nike", "KitchenAid", "Anker", "Philips"],
    "feature": [
        "free returns",
        "a waterproof finish",
        "USB-C charging",
        "a metal frame",
        "machine-washable covers",
        "a quiet motor",
    ],
    "scenario": [
        "a small apartment",
        "a college dorm",
        "travel",
        "a family of four",
        "outdoor use",
        "a home office",
    ],
    "color": ["black", "white", "navy", "gray", "green"],
    "day": ["Friday", "tomorrow", "the weekend"],
    "years": ["1", "2", "5"],
}


@dataclass
class TrafficModel:
    group_size: int = 8  # G completions per prompt
    k: int = 3
    pool: int = 10  # distinct suggestions the policy tends to produce per prompt
    zipf: float = 1.1  # how strongly it prefers its favourite phrasings
    prompts: int = 64  # distinct prompts cycled through (epochs bring them back)
    seed: int = 7

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.queries = load_queries()
        self.rng.shuffle(self.queries)
        self.queries = self.queries[: self.prompts]
        self._pools: dict[str, list[str]] = {}

    def pool_for(self, query: str) -> list[str]:
        pool = self._pools.get(query)
        if pool is None:
            rng = random.Random(f"{self.seed}:{query}")
            seen: dict[str, None] = {}
            while len(seen) < self.pool:
                template = rng.choice(_TEMPLATES)
                fill = {key: rng.choice(values) for key, values in _FILL.items()}
                seen[template.format(q=query, **fill)] = None
            pool = self._pools[query] = list(seen)
        return pool

    def completion(self, query: str) -> list[str]:
        pool = self.pool_for(query)
        weights = [1.0 / (rank + 1) ** self.zipf for rank in range(len(pool))]
        chosen: list[str] = []
        while len(chosen) < min(self.k, len(pool)):
            pick = self.rng.choices(pool, weights)[0]
            if pick not in chosen:
                chosen.append(pick)
        return chosen

    def group(self, index: int) -> dict[str, Any]:
        query = self.queries[index % len(self.queries)]
        items = [
            {
                "id": f"{index}-{g}",
                "context": {"query": query},
                "completion": json.dumps({"options": self.completion(query)}),
            }
            for g in range(self.group_size)
        ]
        return {"items": items, "options": {"k": self.k}}

    def groups(self) -> Iterator[dict[str, Any]]:
        index = 0
        while True:
            yield self.group(index)
            index += 1


def repetition(body: dict[str, Any]) -> tuple[int, int]:
    """(suggestions, distinct suggestions) in one request."""
    texts = [s for item in body["items"] for s in json.loads(item["completion"])["options"]]
    return len(texts), len(set(texts))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
