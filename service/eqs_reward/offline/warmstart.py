"""Algorithm 1's first stage, warm-start SFT, and the paper's metrics per stage.

QualEQS warm-starts the policy with supervised fine-tuning on clicked interactions before GRPO
(Table 1: SFT-GRPO beats GRPO alone by 25 points of Strict Accuracy). A 135M policy that never
closes its JSON earns format reward 0 on every completion, so GRPO sees groups with zero spread
and learns nothing; after the warm start its completions are well formed and vary in quality.

Pairs (context -> a well-formed ``{"options": [...]}``), in order of preference:

- the operator's click logs (``--clicks``): per context, the suggestions shoppers tapped, the
  paper's source;
- otherwise pairs the service selects: candidates sampled from the base policy for each training
  query, scored through ``/v1/score``, the three best distinct ones kept when each earns at least
  ``threshold``. This departs from the paper: it is rejection sampling against the reward,
  standing in for clicks a new shop does not have.

``evaluate_stage`` measures a policy on held-out real queries (never the training ones): one
greedy completion each, scored through the service at the pinned few-shot version: format
reward, mean set reward, Strict Accuracy, Valid Rate and per-dimension pass rates (a malformed
completion's suggestions count as failing, as the paper's strict metrics do).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import read_jsonl, write_jsonl
from eqs_reward.client import RewardClient
from eqs_reward.evaluation import paper_metrics
from eqs_reward.offline.data import HELD_OUT, split_queries
from eqs_reward.offline.options import WarmStartOptions
from eqs_reward.offline.train import GENERATION_PROMPT, prompt_messages, sample_completions
from eqs_reward.rewards import format_problem, parse_completion
from eqs_reward.types import DIMENSIONS, ItemResult, ScoreMode

__all__ = [
    "WarmStartOptions",
    "evaluate_stage",
    "pairs_from_clicks",
    "pairs_from_service",
    "warm_start",
]

log = logging.getLogger("eqs_reward.warmstart")

#: Tokens per suggestion a target may have: the service's default ``max_suggestion_tokens`` (the
#: offline tools do not import the server's settings).
_MAX_TOKENS = 30


def pairs_from_clicks(path: Path, per_context: int = 3) -> list[dict[str, Any]]:
    """Per context, the suggestions shoppers tapped (most tapped first), as SFT targets."""
    from eqs_reward.clicks import read_impressions

    tapped: dict[str, dict[str, int]] = defaultdict(dict)
    for row in read_impressions(path):
        if row.clicked:
            counts = tapped[row.query]
            counts[row.suggestion] = counts.get(row.suggestion, 0) + 1
    pairs = []
    for query, counts in tapped.items():
        chosen = sorted(counts, key=lambda s: -counts[s])[:per_context]
        if (
            len(chosen) == per_context
            and format_problem(chosen, per_context, _MAX_TOKENS, True) is None
        ):
            pairs.append(_pair(query, chosen))
    return pairs


def _pair(query: str, options: Sequence[str]) -> dict[str, Any]:
    completion = json.dumps({"options": list(options)}, ensure_ascii=False)
    return {
        "prompt": prompt_messages(query),
        "completion": [{"role": "assistant", "content": completion}],
    }


#: Two worked examples shown to the base policy when it samples warm-start candidates (never
#: to the policy in training, which sees only ``GENERATION_PROMPT``): a 135M model given the
#: bare instructions closes a usable answer for about one query in twenty; with two examples
#: and its answer opened for it, for about one in three (measured on real queries, see
#: docs/trainers.md).
TEACHER_EXAMPLES = (
    (
        "I need a blender for smoothies",
        [
            "Which blenders under $100 crush ice for smoothies?",
            "Is a Ninja or a Vitamix better for frozen fruit?",
            "Which small blenders fit under a kitchen cabinet?",
        ],
    ),
    (
        "office chair for back pain",
        [
            "Which ergonomic chairs under $300 have adjustable lumbar support?",
            "Are mesh office chairs comfortable for eight hour days?",
            "Which office chairs suit a person over 6 ft tall?",
        ],
    ),
)

_EXAMPLE_OPTIONS = {o for _, options in TEACHER_EXAMPLES for o in options}  # never targets

#: The start of the answer, written for the model: it continues inside the options list.
ANSWER_PREFIX = '{"options": ["'


def teacher_messages(query: str) -> list[dict[str, str]]:
    """The generation prompt with ``TEACHER_EXAMPLES`` as earlier turns."""
    messages: list[dict[str, str]] = []
    for number, (example, options) in enumerate(TEACHER_EXAMPLES):
        # The instructions once; later turns give only the shopper's words (a shorter prompt is
        # most of the sampling cost on a CPU: every sample prefills it).
        ask = GENERATION_PROMPT.format(query=example) if number == 0 else _next(example)
        messages.append({"role": "user", "content": ask})
        messages.append({"role": "assistant", "content": json.dumps({"options": options})})
    return [*messages, {"role": "user", "content": _next(query)}]


def _next(query: str) -> str:
    return f'Now the shopper wrote: "{query}". Answer with JSON only.'


def sample_candidates(
    model_dir: Path, queries: Sequence[str], samples: int, seed: int
) -> list[list[str]]:
    """Distinct suggestions per query from ``samples`` answers of the base policy, prompted with
    ``teacher_messages`` and held to the format by ``ANSWER_PREFIX`` (the complete items of a
    cut-off answer count)."""
    sampled = sample_completions(
        model_dir,
        queries,
        per_query=samples,
        max_new_tokens=72,
        seed=seed,
        messages=teacher_messages,
        prefix=ANSWER_PREFIX,
    )
    pools = []
    for completions in sampled:
        pool: list[str] = []
        for completion in completions:
            for text in parse_completion(completion).suggestions:
                text = " ".join(text.split())[:300]
                if text and text not in pool and text not in _EXAMPLE_OPTIONS:
                    pool.append(text)
        pools.append(pool)
    return pools


def pairs_from_service(
    url: str,
    queries: Sequence[str],
    model_dir: Path,
    *,
    fewshot_version: int,
    samples: int = 4,
    threshold: float = 0.5,
    score_mode: ScoreMode = "soft",
    seed: int = 7,
    record: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rejection sampling against the reward (see the module docstring). Every query's scored
    candidates and the chosen set are appended to ``record`` when given."""
    contexts = [{"query": q} for q in queries]
    sampled = sample_candidates(model_dir, queries, samples, seed)
    pairs = []
    with RewardClient(url, k=None, score_mode=score_mode, fewshot_version=fewshot_version) as c:
        items = [
            {"context": ctx, "suggestions": [s for s in texts if s.strip()][:16] or ["?"]}
            for ctx, texts in zip(contexts, sampled, strict=True)
        ]
        results: list[ItemResult] = []
        for start in range(0, len(items), 16):
            results += c.score(items[start : start + 16]).results
    for query, result in zip(queries, results, strict=True):
        ranked = sorted(
            (s for s in result.suggestions if s.reward is not None and s.reward >= threshold),
            key=lambda s: -(s.reward or 0.0),
        )
        chosen: list[str] = []
        for suggestion in ranked:
            if not _as_asked(suggestion.text) or any(_close(suggestion.text, c) for c in chosen):
                continue
            if format_problem([*chosen, suggestion.text], None, _MAX_TOKENS, True) is None:
                chosen.append(suggestion.text)
            if len(chosen) == 3:
                break
        if len(chosen) == 3:
            pairs.append(_pair(query, chosen))
        if record is not None:
            record.append(
                {
                    "query": query,
                    "candidates": [[s.text, s.reward] for s in result.suggestions],
                    "chosen": chosen if len(chosen) == 3 else None,
                }
            )
    return pairs


def _close(a: str, b: str, limit: float = 0.5) -> bool:
    """Near repeats ("... for a 25-year-old?", "... for a 35-year-old?"): word-set Jaccard at
    least ``limit``. Targets made of such sets teach a small model to repeat itself, which the
    format reward then fails as duplicates once greedy decoding collapses them."""
    left, right = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(left & right) >= limit * max(1, len(left | right))


_WORD = re.compile(r"[\w$£€']+")


def _as_asked(text: str) -> bool:
    """What the generation prompt asks for, checked before a candidate may be a target: a
    question, under 15 words (the reward judges the rest)."""
    return text.strip().endswith("?") and len(text.split()) < 15


def warm_start(options: WarmStartOptions) -> dict[str, Any]:
    """SFT with TRL's SFTTrainer on the pairs; the fine-tuned policy goes to ``out/model``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from eqs_reward.offline.train import default_model_dir, resolve_fewshot_version

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    version = resolve_fewshot_version(options.url, options.fewshot_version)
    model_dir = options.model or default_model_dir()
    queries, _ = split_queries(options.queries, HELD_OUT, options.seed)
    record: list[dict[str, Any]] = []
    if options.pairs is not None:
        pairs, source = read_jsonl(options.pairs), str(options.pairs)
    elif options.clicks is not None:
        pairs, source = pairs_from_clicks(options.clicks), "clicks"
    else:
        pairs = pairs_from_service(
            options.url,
            queries,
            model_dir,
            fewshot_version=version,
            samples=options.samples,
            threshold=options.threshold,
            score_mode=options.score_mode,
            seed=options.seed,
            record=record,
        )
        source = "service"
        write_jsonl(out / "candidates.jsonl", record)
    if len(pairs) < max(1, options.min_pairs):
        raise RuntimeError(
            f"only {len(pairs)} warm-start pairs from {source} (need {options.min_pairs}): "
            "use more --warm-queries or --warm-samples, a lower --threshold-sft, or click logs"
        )
    write_jsonl(out / "pairs.jsonl", pairs)
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    steps = max(1, math.ceil(len(pairs) / options.batch_size * options.epochs))
    config = SFTConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=steps,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=options.seed,
        max_length=384,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    summary = {
        "source": source,
        "pairs": len(pairs),
        "steps": steps,
        "epochs": options.epochs,
        "learning_rate": options.learning_rate,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "model": str(out / "model"),
        "fewshot_version": version,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def generate_answers(
    model_dir: Path, queries: Sequence[str], samples: int = 2, seed: int = 7
) -> list[list[str]]:
    """``samples`` answers per query, sampled as a deployed assistant samples (temperature 0.7,
    top-p 0.95, a fixed seed); see ``evaluate_stage`` for why not greedy."""
    return sample_completions(model_dir, queries, per_query=samples, max_new_tokens=96, seed=seed)


def evaluate_stage(
    url: str,
    model_dir: Path,
    queries: Sequence[str],
    *,
    fewshot_version: int,
    samples: int = 2,
    score_mode: ScoreMode = "soft",
    seed: int = 7,
) -> dict[str, Any]:
    """The paper's metrics for one policy on held-out queries (see the module docstring).

    Answers are sampled, not greedy: greedy decoding drives a 135M model into repeating one
    question three times (a format failure no deployment that samples would see), so greedy
    numbers would measure the decoder more than the policy. Every stage is sampled with the
    same seed, and ``samples`` answers per query halve the noise of a single draw."""
    answers = generate_answers(model_dir, queries, samples, seed)
    contexts = [q for q in queries for _ in range(samples)]
    completions = [a for per_query in answers for a in per_query]
    with RewardClient(url, k=3, score_mode=score_mode, fewshot_version=fewshot_version) as c:
        results: list[ItemResult] = []
        judge_model = None
        for start in range(0, len(completions), 32):
            response = c.score_completions(
                contexts[start : start + 32], completions[start : start + 32]
            )
            results += response.results
            judge_model = response.meta.judge_model
    rows = []
    for query, result in zip(contexts, results, strict=True):
        scores = [
            {d: s.dimension(d) for d in DIMENSIONS}
            if s.status == "ok" and result.format_reward == 1.0
            else None
            for s in result.suggestions
        ]
        rows.append({"context": {"query": query}, "scores": scores or [None]})
    metrics = paper_metrics(rows)
    rewards = [r.reward or 0.0 for r in results]
    metrics["format_reward"] = sum(r.format_reward for r in results) / len(results)
    metrics["mean_set_reward"] = sum(rewards) / len(rewards)
    metrics["answers"] = len(results)
    metrics["judge_model"] = judge_model
    metrics["examples"] = completions[: 3 * samples : samples]
    return metrics
