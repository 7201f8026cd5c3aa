"""``eqs-reward eval``: judge agreement on labeled cases, or the paper's metrics for a policy's
outputs, scored through a running service; a terminal table, a JSON report and a PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import read_jsonl
from eqs_reward._trainer_inputs import context_from
from eqs_reward.client import RewardClient
from eqs_reward.evaluation import (
    CaseResult,
    evaluate,
    json_safe,
    paper_metrics,
    roc_auc,
    summarise_runs,
)
from eqs_reward.types import DIMENSIONS, ScoreMode, ScoreResponse


def stored_thresholds(url: str, version: int | None) -> tuple[dict[str, float], int, bool]:
    """The calibration stored with the version (0.5 each when none)."""
    with RewardClient(url) as client:
        body = client.calibration(version)
    return dict(body["thresholds"]), int(body["version"]), bool(body["fitted"])


def pass_thresholds(
    url: str, version: int | None, recipe: str | None, mode: ScoreMode
) -> tuple[dict[str, float], int, str]:
    """Where each dimension field passes, the version the calibration belongs to, and where
    the cut comes from: a stacking recipe's stored calibration (its fields are stacked
    probabilities, in either mode), else the few-shot version's calibration in soft mode,
    else 0.5 (binary verdicts)."""
    with RewardClient(url) as client:
        listing = client.recipes()
    thresholds, pinned, fitted = stored_thresholds(url, version)
    name = recipe or listing["default"]
    served: dict[str, Any] = next((r for r in listing["recipes"] if r["id"] == name), {})
    if served.get("pass_thresholds"):
        source = f"recipe {name} version {served['version']}: its stored calibration"
        return dict(served["pass_thresholds"]), pinned, source
    if mode == "soft" and fitted:
        return thresholds, pinned, f"few-shot version {pinned}: its calibration"
    return dict.fromkeys(DIMENSIONS, 0.5), pinned, "0.5"


def signal_aucs(cases: list[dict[str, Any]], response: ScoreResponse) -> dict[str, Any]:
    """Every head signal's ROC AUC against every label the cases carry (a case scored alone:
    set-level signals and a suggestion's distance from its siblings are constant, so NaN)."""
    out: dict[str, Any] = {}
    for name in response.signal_names:
        values = [r.signal_means([name])[name] for r in response.results]
        per_label: dict[str, float] = {}
        for label in sorted({k for c in cases for k in c.get("labels", {})}):
            pairs = [
                (int(c["labels"][label]), v)
                for c, v in zip(cases, values, strict=True)
                if v is not None and label in c.get("labels", {})
            ]
            if len({v for _, v in pairs}) < 2:
                per_label[label] = math.nan  # a constant signal ranks nothing
                continue
            per_label[label] = roc_auc([y for y, _ in pairs], [v for _, v in pairs])
        out[name] = per_label
    return out


def run_cases(
    url: str,
    cases_path: Path,
    mode: ScoreMode,
    version: int | None,
    repeats: int,
    recipe: str | None = None,
) -> dict[str, Any]:
    cases = read_jsonl(cases_path)
    thresholds, pinned, source = pass_thresholds(url, version, recipe, mode)
    reports = []
    with RewardClient(url, k=1, score_mode=mode, fewshot_version=pinned, recipe=recipe) as client:
        for run in range(repeats):
            items = [
                {
                    "id": c.get("id", str(i)),
                    "context": c["context"],
                    "suggestions": [c["suggestion"]],
                }
                for i, c in enumerate(cases)
            ]
            # Repeats ask the judge again (cache off): the spread is the judge's own.
            result = client.score(items, cache=run == 0 and repeats == 1)
            results = [
                CaseResult.scored(
                    str(case.get("id")),
                    case["context"],
                    case["suggestion"],
                    case["labels"],
                    item.suggestions[0],
                )
                for case, item in zip(cases, result.results, strict=True)
            ]
            reports.append(evaluate(results, thresholds))
            if run == 0:
                signals = signal_aucs(cases, result)
    report = reports[0]
    report["signals"] = signals
    report["meta"] = {
        **result.meta.to_dict(),
        "cases_file": str(cases_path),
        "repeats": repeats,
        "calibrated": source != "0.5",
        "thresholds_from": source,
    }
    if repeats > 1:
        report["repeats"] = summarise_runs(reports)
    return report


def run_suggestions(
    url: str,
    path: Path,
    mode: ScoreMode,
    version: int | None,
    recipes: Sequence[str | None] = (None,),
) -> dict[str, Any]:
    """The paper's metrics for a policy's outputs (from the judge's dimensions, the same under
    every recipe) and, per recipe, the rewards it gives them and the mean of every signal: how
    each recipe would pay the same outputs."""
    rows = read_jsonl(path)
    thresholds, pinned, fitted = stored_thresholds(url, version)
    if mode == "binary":
        thresholds, fitted = dict.fromkeys(DIMENSIONS, 0.5), False
    items = [
        {
            "context": context_from(r.get("context") or r.get("query")),
            "suggestions": r["suggestions"],
        }
        for r in rows
    ]
    per_recipe: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for recipe in recipes or (None,):
        with RewardClient(
            url, k=None, score_mode=mode, fewshot_version=pinned, recipe=recipe
        ) as client:
            result = client.score(items)
        scored = [
            {
                "context": item_in["context"],
                "scores": [
                    {d: s.dimension(d) for d in DIMENSIONS} if s.status == "ok" else None
                    for s in item.suggestions
                ],
            }
            for item_in, item in zip(items, result.results, strict=True)
        ]
        metrics = paper_metrics(scored, thresholds)
        set_rewards = [r.reward for r in result.results if r.reward is not None]
        rewards = [s.reward for r in result.results for s in r.suggestions if s.reward is not None]
        columns = result.signal_logs()
        metrics["mean_set_reward"] = _mean(set_rewards)
        metrics["mean_suggestion_reward"] = _mean(rewards)
        metrics["signals"] = {
            name: _mean([v for v in column if v is not None]) for name, column in columns.items()
        }
        recipe_meta = result.meta.recipe or {"id": "qualeqs", "version": None}
        per_recipe[f"{recipe_meta['id']}@{recipe_meta['version']}"] = metrics
        if not report:
            report = dict(metrics)
            report["meta"] = {**result.meta.to_dict(), "file": str(path), "calibrated": fitted}
    report["recipes"] = per_recipe
    return report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _f(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "   -  "
    return f"{value:6.3f}"


def print_cases_table(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(
        f"judge {meta.get('judge_model')}  prompt {meta.get('prompt_version')}  few-shot "
        f"v{meta.get('fewshot_version')}  mode {meta.get('score_mode')}  "
        f"{report['judged']}/{report['cases']} cases judged"
    )
    print(f"pass thresholds: {meta.get('thresholds_from', '0.5')}")
    header = (
        f"{'dimension':<18} {'agree':>6} {'kappa':>6} {'AUC':>6} {'fail P':>6} "
        f"{'fail R':>6}   TP  FP  FN  TN"
    )
    print(header)
    print("-" * len(header))
    for d in DIMENSIONS:
        r = report["dimensions"][d]
        print(
            f"{d:<18} {_f(r['agreement'])} {_f(r['kappa'])} {_f(r['auc'])} "
            f"{_f(r['fail_precision'])} {_f(r['fail_recall'])} "
            f"{r['tp']:4d}{r['fp']:4d}{r['fn']:4d}{r['tn']:4d}"
        )
    print(f"{'reward (product)':<18} {'':>6} {'':>6} {_f(report['reward']['auc'])}")
    signals = report.get("signals") or {}
    label_names = sorted({label for per in signals.values() for label in per})
    if signals and label_names:
        print("\nROC AUC of every head signal against each label (- : constant or one class):")
        print(f"  {'signal':<28}" + "".join(f" {name[:17]:>17}" for name in label_names))
        for name, per in signals.items():
            print(f"  {name:<28}" + "".join(f" {_f(per.get(x)):>17}" for x in label_names))
    if "repeats" in report:
        runs = report["repeats"]
        print(f"\nover {runs['runs']} runs (mean +- std):")
        for d in DIMENSIONS:
            a, auc = runs["dimensions"][d]["agreement"], runs["dimensions"][d]["auc"]
            print(
                f"  {d:<18} agreement {_f(a['mean'])} +- {_f(a['std'])}   "
                f"AUC {_f(auc['mean'])} +- {_f(auc['std'])}"
            )
    print("\nworst disagreements:")
    for w in report["worst"]:
        labels = "".join(str(w["labels"][d]) for d in DIMENSIONS)
        scores = " ".join(f"{w['scores'][d]:.2f}" for d in DIMENSIONS)
        print(
            f"  {str(w['id'])[:10]:<10} labels {labels}  judge {scores}  "
            f"{w['query']!s:.20} | {w['suggestion']:.60}"
        )


def print_paper_table(report: dict[str, Any]) -> None:
    print(
        f"{report['contexts']} contexts, {report['suggestions']} suggestions, few-shot "
        f"v{report['meta'].get('fewshot_version')}"
    )
    print(
        f"Strict Accuracy {_f(report['strict_accuracy'])}   Valid Rate {_f(report['valid_rate'])}"
    )
    for d in DIMENSIONS:
        print(f"  {d:<18} pass rate {_f(report['pass_rates'][d])}")
    for intent, sub in report["by_intent"].items():
        print(
            f"  intent {intent:<24} strict {_f(sub['strict_accuracy'])} valid "
            f"{_f(sub['valid_rate'])} ({sub['contexts']} contexts)"
        )
    for name, sub in report.get("recipes", {}).items():
        signals = "  ".join(f"{k} {_f(v).strip()}" for k, v in sub["signals"].items())
        print(
            f"recipe {name}: mean set reward {_f(sub['mean_set_reward'])}, mean suggestion "
            f"reward {_f(sub['mean_suggestion_reward'])}\n  {signals}"
        )


def plot_cases(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, roc) = plt.subplots(1, 2, figsize=(11, 4.5))
    metrics = ("agreement", "kappa", "auc", "fail_recall")
    width = 0.2
    for n, metric in enumerate(metrics):
        values = [report["dimensions"][d][metric] for d in DIMENSIONS]
        values = [
            0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values
        ]
        bars.bar([i + n * width for i in range(len(DIMENSIONS))], values, width, label=metric)
    bars.set_xticks([i + 1.5 * width for i in range(len(DIMENSIONS))], list(DIMENSIONS))
    bars.set_ylim(-0.2, 1.05)
    bars.axhline(0, color="black", linewidth=0.6)
    bars.set_title("Judge vs labels, per dimension")
    bars.legend(fontsize="small")
    for d in DIMENSIONS:
        points = report["dimensions"][d]["roc"]
        auc = report["dimensions"][d]["auc"]
        roc.plot(
            [p[0] for p in points], [p[1] for p in points], label=f"{d} (AUC {_f(auc).strip()})"
        )
    reward = report["reward"]["roc"]
    roc.plot(
        [p[0] for p in reward],
        [p[1] for p in reward],
        linewidth=2.5,
        label=f"reward (AUC {_f(report['reward']['auc']).strip()})",
    )
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title("ROC of soft scores (label 1 = passes)")
    roc.legend(fontsize="small", loc="lower right")
    meta = report["meta"]
    figure.suptitle(
        f"{meta.get('judge_model')}, few-shot v{meta.get('fewshot_version')}, "
        f"{report['judged']} cases"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(report: dict[str, Any], out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(json_safe(report), indent=2))
    return path
