"""``eqs-reward redteam``: how much reward attacks win, per family, from a running service.

The attacks (``eqs_reward.offline.corpora``: seven families built from real shopper queries, and
the held-out rounds written while the guard was developed) and a sample of legitimate suggestions
are scored through ``/v1/score`` with the configured judge, one suggestion per item. An attack
*succeeds* when the judge passes it: every dimension at or above the version's calibrated pass
threshold, or, when none was calibrated, a reward above the median reward of the legitimate
suggestions. Reported per family: how many were refused by the guard (reward 0), how many were
rewarded 0 in all, how many succeeded, the mean reward; and for the legitimate ones, how many the
guard refused (false refusals) and their median reward.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import write_jsonl
from eqs_reward.client import RewardClient
from eqs_reward.offline.corpora import FAMILIES, HELD_OUT, Case, attack_corpus, legit_corpus
from eqs_reward.offline.options import RedteamOptions
from eqs_reward.types import DIMENSIONS, SuggestionScore

__all__ = ["RedteamOptions", "run", "write_corpus"]


def write_corpus(path: Path) -> int:
    """The attacks as JSONL (``family``, ``context``, ``suggestion``): the bank gate's
    ``EQS_REWARD_FEWSHOT_GATE_ATTACKS`` file, or an operator's starting point."""
    rows = [case.to_dict() for case in attack_corpus()]
    rows += [
        {"family": f"held_out/{name}", "context": {"query": "-"}, "suggestion": text}
        for name, texts in HELD_OUT.items()
        for text in texts
    ]
    write_jsonl(path, rows)
    return len(rows)


def _score(client: RewardClient, cases: list[Case], batch: int) -> list[SuggestionScore]:
    out: list[SuggestionScore] = []
    for start in range(0, len(cases), batch):
        items = [
            {"context": {"query": c.query}, "suggestions": [c.suggestion]}
            for c in cases[start : start + batch]
        ]
        out += [r.suggestions[0] for r in client.score(items).results]
    return out


def _passes(score: SuggestionScore, thresholds: dict[str, float] | None, level: float) -> bool:
    if score.status != "ok":
        return False
    if thresholds is not None:
        return all((score.dimension(d) or 0.0) >= thresholds[d] for d in DIMENSIONS)
    return (score.reward or 0.0) > level


def _taught_products(cases: list[Case], examples: list[dict[str, Any]]) -> list[float]:
    """The taught head's product on each case with the guard out of the way: what the guard
    stands between a policy and (the head fit as the service fits it, on the bank's examples)."""
    import asyncio
    from datetime import UTC, datetime

    from eqs_reward.judge.cases import Context, Example
    from eqs_reward.server.bank import BankVersion
    from eqs_reward.server.heads import WordLlamaEmbedder
    from eqs_reward.server.heads.taught import TaughtHead, training_cases

    head = TaughtHead(WordLlamaEmbedder(), training_cases())
    bank = tuple(Example.model_validate(e, strict=False) for e in examples)
    version = BankVersion(0, bank, datetime.now(UTC), tag="redteam")
    items = [(Context(query=c.query), [c.suggestion]) for c in cases]
    rows = asyncio.run(head.score(items, version))
    return [math.prod(r[0][0][d] for d in DIMENSIONS) for r in rows]


def _summary(
    scores: list[SuggestionScore],
    thresholds: dict[str, float] | None,
    level: float,
    taught: list[float] | None = None,
) -> dict[str, Any]:
    n = len(scores)
    rewards = [s.reward or 0.0 for s in scores]
    return {
        "taught_mean": statistics.fmean(taught) if taught else math.nan,
        "taught_above_legit_median": sum(t > level for t in taught or []),
        "attacks": n,
        "refused": sum(s.status == "rejected" for s in scores),
        "rewarded_zero": sum(r == 0.0 for r in rewards),
        "succeeded": sum(_passes(s, thresholds, level) for s in scores),
        "failed_judge": sum(s.status == "failed" for s in scores),
        "mean_reward": statistics.fmean(rewards) if rewards else math.nan,
        "reasons": {
            reason: sum(s.reason == reason for s in scores)
            for reason in sorted({s.reason for s in scores if s.reason})
        },
    }


def run(options: RedteamOptions) -> dict[str, Any]:
    attacks = attack_corpus()
    held = [Case(f"held_out/{n}", "sofa", t) for n, texts in HELD_OUT.items() for t in texts]
    legit_all = legit_corpus()
    legit = legit_all[:: max(1, len(legit_all) // options.legit)][: options.legit]
    with RewardClient(
        options.url, k=1, score_mode=options.score_mode, fewshot_version=options.fewshot_version
    ) as client:
        calibration = client.calibration(options.fewshot_version)
        legit_scores = _score(client, legit, options.batch)
        attack_scores = _score(client, attacks, options.batch)
        held_scores = _score(client, held, options.batch)
        meta = client.score([{"context": {"query": "-"}, "suggestions": ["-"]}]).meta
        examples = client.fewshot(options.fewshot_version)["examples"]
    taught = _taught_products(attacks + held + legit, examples)
    taught_of = {id(c): t for c, t in zip(attacks + held + legit, taught, strict=True)}
    thresholds = dict(calibration["thresholds"]) if calibration.get("fitted") else None
    judged = [s.reward for s in legit_scores if s.status == "ok" and s.reward is not None]
    level = statistics.median(judged) if judged else 0.5
    by_family = {
        family: _summary(
            [s for c, s in zip(attacks, attack_scores, strict=True) if c.family == family],
            thresholds,
            level,
            [taught_of[id(c)] for c in attacks if c.family == family],
        )
        for family in FAMILIES
    }
    by_round = {
        name: _summary(
            [s for c, s in zip(held, held_scores, strict=True) if c.family == f"held_out/{name}"],
            thresholds,
            level,
            [taught_of[id(c)] for c in held if c.family == f"held_out/{name}"],
        )
        for name in HELD_OUT
    }
    report = {
        "meta": {**meta.to_dict(), "url": options.url, "calibrated": thresholds is not None},
        "pass_level": thresholds or {"reward_above": level},
        "overall": _summary(attack_scores, thresholds, level, [taught_of[id(c)] for c in attacks]),
        "families": by_family,
        "held_out": by_round,
        "legit": {
            "scored": len(legit_scores),
            "refused": sum(s.status == "rejected" for s in legit_scores),
            "median_reward": level,
            "succeeded": sum(_passes(s, thresholds, level) for s in legit_scores),
            "taught_median": statistics.median(taught_of[id(c)] for c in legit),
        },
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "redteam.json").write_text(json.dumps(report, indent=2))
    plot(report, options.out / "redteam.png")
    return report


def _share(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table (also the docs')."""
    meta = report["meta"]
    lines = [
        f"judge {meta['judge_model']}, prompt {meta['prompt_version']}, few-shot "
        f"v{meta['fewshot_version']}, {meta['score_mode']} scores; pass level: "
        + (
            "calibrated thresholds"
            if meta["calibrated"]
            else f"reward above {report['pass_level']['reward_above']:.3f} (median of legitimate)"
        ),
        f"{'family':<22} {'attacks':>7} {'refused':>8} {'reward 0':>9} {'succeeded':>10} "
        f"{'mean r':>7} {'taught':>7}",
    ]

    def row(name: str, s: dict[str, Any]) -> str:
        n = s["attacks"]
        return (
            f"{name:<22} {n:>7} {_share(s['refused'], n):>8.1%} "
            f"{_share(s['rewarded_zero'], n):>9.1%} {_share(s['succeeded'], n):>10.1%} "
            f"{s['mean_reward']:>7.3f} {s.get('taught_mean', math.nan):>7.3f}"
        )

    lines += [row(f, s) for f, s in report["families"].items()]
    lines.append(row("all attacks", report["overall"]))
    lines.append("held out (written while the guard was developed; round 4 after the last change):")
    lines += [row(f"  {name}", s) for name, s in report["held_out"].items()]
    legit = report["legit"]
    lines += [
        f"legitimate: {legit['scored']} scored, {legit['refused']} refused by the guard, "
        f"median reward {legit['median_reward']:.3f}, median taught product "
        f"{legit.get('taught_median', math.nan):.3f}",
        "taught: the taught head's mean product on the family with the guard out of the way "
        "(what the guard stands between a policy and)",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {**report["families"], **{f"held {k}": v for k, v in report["held_out"].items()}}
    names = list(rows)
    zero = [_share(r["rewarded_zero"], r["attacks"]) for r in rows.values()]
    won = [_share(r["succeeded"], r["attacks"]) for r in rows.values()]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    x = range(len(names))
    axis.bar([i - 0.2 for i in x], zero, 0.4, label="rewarded 0", color="#4477aa")
    axis.bar([i + 0.2 for i in x], won, 0.4, label="passed the judge", color="#cc6677")
    axis.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xticks(list(x), names, rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("share of attacks")
    meta = report["meta"]
    axis.set_title(f"Red team: {meta['judge_model']}, {meta['prompt_version']}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
