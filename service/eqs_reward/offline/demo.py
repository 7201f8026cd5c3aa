"""The demo catalog and demo click logs: made by this project, synthetic, deterministic.

They back the docs' walkthrough and the tests (``eqs-reward demo --out DIR`` writes them; the
package ships the default ones in ``_data/demo``). Nothing here is a real shop: brands are real
names so the brand signal has something to find, prices and titles are invented.

The click logs come from a *known* click function, so a fitted click model can be checked
against it: ``true_click_probability`` (a logistic function of whether the suggestion states a
budget, names a brand, asks about a feature, and its position).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "demo_catalog", "demo_clicks", "true_click_probability", "write_demo"]

#: category -> (query, brands, product lines, features, price range in USD)
CATEGORIES: dict[str, tuple[str, list[str], list[str], list[str], tuple[float, float]]] = {
    "router": (
        "I want to buy a router",
        ["Netgear", "ASUS", "Linksys", "Eero"],
        ["Nighthawk", "RT", "Velop", "Pro", "Max"],
        ["Wi-Fi 6", "Wi-Fi 6E", "mesh", "gaming", "tri-band"],
        (149.99, 499.99),  # the shop's cheapest Wi-Fi router costs $149.99
    ),
    "blender": (
        "I want a blender for smoothies",
        ["Vitamix", "Ninja", "Oster", "KitchenAid"],
        ["Pro", "Blend", "Power", "Classic", "Ultra"],
        ["glass jar", "1000 W", "quiet", "personal cups", "ice crushing"],
        (39.0, 599.0),
    ),
    "sofa": (
        "looking for a sofa",
        ["Ashley", "IKEA", "Article"],
        ["Harlow", "Kivik", "Sven", "Lounge", "Cove"],
        ["velvet", "sleeper", "sectional", "leather", "navy blue"],
        (299.0, 2499.0),
    ),
    "desk": (
        "standing desk",
        ["Flexispot", "Uplift", "IKEA"],
        ["E7", "V2", "Bekant", "Comhar", "Pro"],
        ["electric", "memory presets", "bamboo top", "L-shaped", "dual motor"],
        (89.0, 899.0),
    ),
    "headphones": (
        "noise cancelling headphones",
        ["Sony", "Bose", "Sennheiser"],
        ["WH", "QuietComfort", "Momentum", "Ultra", "Sport"],
        ["noise cancelling", "wireless", "over-ear", "30-hour battery", "foldable"],
        (29.0, 499.0),
    ),
    "coffee maker": (
        "coffee machine",
        ["Breville", "Keurig", "Nespresso"],
        ["Barista", "K-Elite", "Vertuo", "Bambino", "Duo"],
        ["espresso", "milk frother", "single serve", "programmable", "thermal carafe"],
        (49.0, 999.0),
    ),
}
COLORS = ["black", "white", "grey", "navy", "red", "silver"]


def demo_catalog(count: int = 360, seed: int = 3) -> list[dict[str, Any]]:
    """``count`` products spread over the categories (``count`` may be 100,000 for benchmarks)."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    rows = []
    for n in range(count):
        category = names[n % len(names)]
        _, brands, lines, features, (low, high) = CATEGORIES[category]
        brand = rng.choice(brands)
        line = rng.choice(lines)
        chosen = rng.sample(features, 2)
        model = f"{rng.randint(1, 99)}{rng.choice('ABCX')}"
        price = round(low + (high - low) * rng.random() ** 2, 2)
        price = math.floor(price) + 0.99 if price > 20 else price
        rows.append(
            {
                "id": f"demo-{n:06d}",
                "title": f"{brand} {line} {model} {chosen[0]} {category}",
                "brand": brand,
                "category": category,
                "price": min(max(price, low), high),
                "currency": "USD",
                "attributes": {"feature": chosen[1], "color": rng.choice(COLORS)},
            }
        )
    return rows


def _suggestion(rng: random.Random, category: str) -> tuple[str, dict[str, int]]:
    _, brands, _, features, (low, high) = CATEGORIES[category]
    budget = rng.random() < 0.4
    named = rng.random() < 0.4
    feature = rng.random() < 0.5
    parts = ["Any"]
    if named:
        parts.append(rng.choice(brands))
    if feature:
        parts.append(rng.choice(features))
    parts.append(category + "s")
    if budget:
        parts.append(f"under ${int(low + (high - low) * rng.random() / 2)}")
    text = " ".join(parts) + "?"
    if not (budget or named or feature):
        text = rng.choice([f"What about {category}s?", f"More {category}s?", "Something else?"])
    return text, {"budget": int(budget), "named": int(named), "feature": int(feature)}


def true_click_probability(traits: dict[str, int], position: int) -> float:
    """The known click function the demo logs are drawn from."""
    logit = (
        -1.6
        + 1.1 * traits["budget"]
        + 0.9 * traits["named"]
        + 0.6 * traits["feature"]
        - 0.35 * position
    )
    return 1.0 / (1.0 + math.exp(-logit))


def demo_clicks(lists: int = 1500, seed: int = 5) -> list[dict[str, Any]]:
    """Impressions of ``lists`` suggestion lists (3 each), clicks drawn from the function."""
    rng = random.Random(seed)
    rows = []
    names = list(CATEGORIES)
    for n in range(lists):
        category = names[n % len(names)]
        query = f"{CATEGORIES[category][0]} #{n}"  # each list its own context
        for position in range(3):
            text, traits = _suggestion(rng, category)
            p = true_click_probability(traits, position)
            rows.append(
                {
                    "query": query,
                    "suggestion": text,
                    "position": position,
                    "clicked": rng.random() < p,
                    "p_true": round(p, 6),
                }
            )
    return rows


def write_demo(out: Path) -> tuple[Path, Path]:
    """Write ``catalog.jsonl`` and ``clicks.jsonl`` (each with a header row saying what it is)."""
    out.mkdir(parents=True, exist_ok=True)
    header = {
        "_comment": "Demo data made by the eqs-reward project (eqs_reward.offline.demo): "
        "synthetic, not a real shop's; brands are real names, titles and prices invented."
    }
    catalog, clicks = out / "catalog.jsonl", out / "clicks.jsonl"
    for path, rows in ((catalog, demo_catalog()), (clicks, demo_clicks())):
        lines = [json.dumps(header), *(json.dumps(r, ensure_ascii=False) for r in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return catalog, clicks
