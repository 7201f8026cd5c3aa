"""Recipes: which reward heads run and how their signals combine into ``r(s)`` and ``r_q``.

A recipe is a versioned TOML file in ``prompts/recipes/`` (``<id>.toml``). It names its heads
(with their settings, e.g. the shopper's prompt version) and two expressions, written as TOML
values and evaluated here; nothing in the file is ever executed as code:

- a number is a constant; a string names a signal: ``"judge.answerability"`` (a suggestion's
  signal) in the suggestion expression; in the set expression ``"format"`` (r_f), a set signal
  such as ``"exclusivity.diversity"``, and inside an ``*_over`` aggregation ``"reward"`` (r(s))
  or a suggestion's signal;
- a table with one operation: ``product``, ``sum``, ``mean``, ``min``, ``max`` (of a list);
  ``weighted`` (weighted mean: ``{terms = [...], weights = [...]}``) and ``weighted_sum``;
  ``one_minus`` and ``clip`` (to [0, 1]) of one expression; ``stacked``, a logistic model over
  probabilities fit on labels (``{terms = [...], coef = [...], intercept = x, threshold = t,
  power = p}``: ``sigmoid(intercept + sum coef * logit(term)) ** power``; ``threshold`` is the
  stored calibration, the cut that best separates the labels out of fold, where pass/fail
  measures cut (``Recipe.pass_thresholds``) and not applied to rewards; ``eqs-reward fidelity
  fit`` writes these); and, in the set
  expression only,
  aggregations over the suggestions: ``mean_over``, ``any_over`` (GQR's ``1 - prod(1 - x)``),
  ``sum_over``, ``min_over``, ``max_over``.

The default recipe ``qualeqs`` is QualEQS exactly: ``r(s) = a * f * i`` and
``r_q = r_f * mean r(s)`` (the products start at 1.0 and multiply in order, so the numbers are
the same floats as the reward math's). The disagreement ``u_q`` is always the population variance
of the ``r(s)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from eqs_reward._toml import VERSION_ID, read_versioned
from eqs_reward.types import DIMENSIONS, ScoreMode

__all__ = [
    "HEAD_SETTINGS",
    "HEAD_SET_SIGNALS",
    "HEAD_SIGNALS",
    "FitFor",
    "Recipe",
    "RecipeError",
    "load_recipes",
]

#: The signals each head gives per suggestion, and per set.
HEAD_SIGNALS: dict[str, tuple[str, ...]] = {
    "judge": ("answerability", "factuality", "information_gain"),
    "shopper": ("tap",),
    "exclusivity": ("novelty", "distinctness"),
    "retrieval": ("hits", "match", "budget", "brand", "consistency"),
    "clicks": ("p_click",),
    "taught": ("answerability", "factuality", "information_gain"),
}
HEAD_SET_SIGNALS: dict[str, tuple[str, ...]] = {
    "judge": (),
    "shopper": ("any_tap",),
    "exclusivity": ("diversity",),
    "retrieval": ("diversity", "coverage"),
    "clicks": ("any_click",),
    "taught": (),
}
#: The settings a recipe may give each head (``[heads.shopper] prompt = "shopper-v1"``), with
#: their types. The judge's prompt is the server's (``EQS_REWARD_PROMPT_VERSION``).
HEAD_SETTINGS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "judge": {},
    "shopper": {"prompt": str},
    "exclusivity": {"low": (int, float), "high": (int, float)},
    "retrieval": {"depth": int},
    "clicks": {},
    "taught": {},
}

_LISTS = ("product", "sum", "mean", "min", "max")
_WEIGHTED = ("weighted", "weighted_sum")
_UNARY = ("one_minus", "clip")
_STACKED_KEYS = {"terms", "coef", "intercept", "threshold", "power"}
#: How close to 0 or 1 a stacked term's probability is taken before its log-odds (a hard
#: verdict of 0 or 1 has none).
_STACKED_EPSILON = 1e-4
_OVER = ("mean_over", "any_over", "sum_over", "min_over", "max_over")


class RecipeError(ValueError):
    """A recipe file that does not load or does not check."""


@dataclass(frozen=True)
class _Scope:
    """What names an expression may use where it stands."""

    suggestion: frozenset[str]  # per-suggestion signals
    set_level: bool  # in the set expression (format, set signals, *_over allowed)
    set_signals: frozenset[str] = frozenset()
    inside_over: bool = False


def _check(node: Any, scope: _Scope, where: str) -> None:
    if isinstance(node, bool):
        raise RecipeError(f"{where}: {node!r} is not a number")
    if isinstance(node, int | float):
        return
    if isinstance(node, str):
        allowed: set[str] = set()
        if not scope.set_level or scope.inside_over:
            allowed |= scope.suggestion
        if scope.set_level and not scope.inside_over:
            allowed |= scope.set_signals | {"format"}
        if scope.inside_over:
            allowed.add("reward")
        if node not in allowed:
            raise RecipeError(f"{where}: {node!r} is not a signal here (known: {sorted(allowed)})")
        return
    if not isinstance(node, dict) or len(node) != 1:
        raise RecipeError(f"{where}: an expression is a number, a signal, or a one-key table")
    ((op, arg),) = node.items()
    if op in _LISTS:
        if not isinstance(arg, list) or not arg:
            raise RecipeError(f"{where}.{op}: needs a non-empty list")
        for n, term in enumerate(arg):
            _check(term, scope, f"{where}.{op}[{n}]")
    elif op in _WEIGHTED:
        if not isinstance(arg, dict) or set(arg) != {"terms", "weights"}:
            raise RecipeError(f"{where}.{op}: needs {{terms = [...], weights = [...]}}")
        terms, weights = arg["terms"], arg["weights"]
        if len(terms) != len(weights) or not terms:
            raise RecipeError(f"{where}.{op}: as many weights as terms")
        if any(isinstance(w, bool) or not isinstance(w, int | float) or w < 0 for w in weights):
            raise RecipeError(f"{where}.{op}: weights are non-negative numbers")
        if op == "weighted" and sum(weights) <= 0:
            raise RecipeError(f"{where}.{op}: the weights must not all be 0")
        for n, term in enumerate(terms):
            _check(term, scope, f"{where}.{op}.terms[{n}]")
    elif op in _UNARY:
        _check(arg, scope, f"{where}.{op}")
    elif op == "stacked":
        _check_stacked(arg, scope, f"{where}.{op}")
    elif op in _OVER:
        if not scope.set_level or scope.inside_over:
            raise RecipeError(f"{where}.{op}: aggregations over suggestions belong to the set")
        inner = _Scope(scope.suggestion, True, scope.set_signals, inside_over=True)
        _check(arg, inner, f"{where}.{op}")
    else:
        raise RecipeError(f"{where}: unknown operation {op!r}")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _check_stacked(arg: Any, scope: _Scope, where: str) -> None:
    if not isinstance(arg, dict) or set(arg) != _STACKED_KEYS:
        raise RecipeError(f"{where}: needs {{{', '.join(sorted(_STACKED_KEYS))}}}")
    terms, coef = arg["terms"], arg["coef"]
    if not isinstance(terms, list) or not isinstance(coef, list) or len(terms) != len(coef):
        raise RecipeError(f"{where}: as many coefficients as terms")
    if not terms or not all(_number(c) for c in coef) or not _number(arg["intercept"]):
        raise RecipeError(f"{where}: coefficients and intercept are finite numbers")
    if not _number(arg["threshold"]) or not 0 < arg["threshold"] < 1:
        raise RecipeError(f"{where}: threshold is a probability between 0 and 1")
    if not _number(arg["power"]) or arg["power"] <= 0:
        raise RecipeError(f"{where}: power is a positive number")
    for n, term in enumerate(terms):
        _check(term, scope, f"{where}.terms[{n}]")


def _stacked(arg: dict[str, Any], terms: Sequence[float]) -> float:
    logit = float(arg["intercept"])
    for c, term in zip(arg["coef"], terms, strict=True):
        p = min(1.0 - _STACKED_EPSILON, max(_STACKED_EPSILON, term))
        logit += c * math.log(p / (1.0 - p))
    probability = 1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, logit))))
    # Binary mode gets the probability too: thresholded, 3 of 6 GRPO-shaped groups of
    # real-query completions got one reward for all 8 samples (tests/vllm/test_fidelity.py),
    # where the probability leaves 0 of 6 without spread. ``threshold`` is where pass/fail
    # measures cut (``pass_thresholds``), not applied here.
    return float(probability ** arg["power"])


def _uses(op: str, node: Any) -> bool:
    """Whether an expression uses an operation anywhere."""
    if isinstance(node, dict):
        return op in node or any(_uses(op, value) for value in node.values())
    if isinstance(node, list):
        return any(_uses(op, value) for value in node)
    return False


def _names(node: Any) -> set[str]:
    """The signal names an expression reads."""
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return {name for value in node.values() for name in _names(value)}
    if isinstance(node, list):
        return {name for value in node for name in _names(value)}
    return set()


def _evaluate(node: Any, values: Mapping[str, float], rows: Sequence[Mapping[str, float]]) -> float:
    if isinstance(node, int | float):
        return float(node)
    if isinstance(node, str):
        return values[node]
    ((op, arg),) = node.items()
    if op in _LISTS:
        terms = [_evaluate(t, values, rows) for t in arg]
        if op == "product":
            result = 1.0
            for term in terms:
                result *= term
            return result
        if op == "sum":
            return math.fsum(terms)
        if op == "mean":
            return sum(terms) / len(terms)
        return min(terms) if op == "min" else max(terms)
    if op in _WEIGHTED or op == "stacked":
        terms = [_evaluate(t, values, rows) for t in arg["terms"]]
        if op == "stacked":
            return _stacked(arg, terms)
        total = math.fsum(w * t for w, t in zip(arg["weights"], terms, strict=True))
        return total / math.fsum(arg["weights"]) if op == "weighted" else total
    if op == "one_minus":
        return 1.0 - _evaluate(arg, values, rows)
    if op == "clip":
        return min(1.0, max(0.0, _evaluate(arg, values, rows)))
    per = [_evaluate(arg, row, ()) for row in rows]
    if op == "mean_over":
        return sum(per) / len(per) if per else 0.0
    if op == "sum_over":
        return math.fsum(per)
    if op == "any_over":
        missed = 1.0
        for p in per:
            missed *= 1.0 - p
        return 1.0 - missed
    if not per:
        return 0.0
    return min(per) if op == "min_over" else max(per)


@dataclass(frozen=True, slots=True)
class FitFor:
    """What a stacking recipe is fit for, as its ``[fit]`` table names it: the judge model,
    its prompt version, and the taught head's family (``TaughtHead.family``: its features and
    embedder). The stacker weighs the judge's and the taught head's log-odds as that judge and
    that embedder's regressions spread them; a service running another is refit."""

    judge_model: str
    prompt_version: str
    taught: str


@dataclass(frozen=True)
class Recipe:
    """One versioned recipe (see the module docstring)."""

    id: str
    version: int
    description: str
    heads: dict[str, dict[str, Any]]
    suggestion: Any
    set: Any
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """What cache keys carry: the recipe and its version."""
        return f"{self.id}@{self.version}"

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(f"{h}.{s}" for h in self.heads for s in HEAD_SIGNALS[h])

    @property
    def set_signals(self) -> tuple[str, ...]:
        return tuple(f"{h}.{s}" for h in self.heads for s in HEAD_SET_SIGNALS[h])

    def suggestion_reward(self, signals: Mapping[str, float]) -> float:
        """``r(s)`` from one suggestion's signals."""
        return _evaluate(self.suggestion, signals, ())

    @cached_property
    def _stacks(self) -> bool:
        return _uses("stacked", [self.suggestion, self.set])

    @property
    def fit(self) -> dict[str, Any] | None:
        """What a fitted recipe's stacking was fit for (its ``[fit]`` table: ``judge_model``,
        ``prompt_version``, ``taught``, ``cases``, ``date``); None for a recipe set by hand."""
        fit = self.source.get("fit")
        return dict(fit) if isinstance(fit, dict) else None

    @property
    def refit_of(self) -> int | None:
        """For a service's refit, the version of the recipe it refit (``[fit] refit_of``)."""
        fit = self.fit or {}
        value = fit.get("refit_of")
        return value if isinstance(value, int) else None

    def fit_for(self, target: FitFor) -> bool:
        """Whether the stacking was fit for ``target`` (True when nothing stacks). A fit that
        names no taught head (written before fits named it) is taken as fit for any."""
        fit = self.fit
        if not self._stacks or fit is None:
            return not self._stacks
        named = (fit["judge_model"], fit["prompt_version"], fit.get("taught", target.taught))
        return named == (target.judge_model, target.prompt_version, target.taught)

    def judge_mode(self, mode: ScoreMode) -> ScoreMode:
        """The mode the recipe's LLM heads are asked in for a request in ``mode``: soft
        whenever the recipe stacks, because a stacker reads probabilities, not the judge's
        hard verdicts."""
        return "soft" if self._stacks else mode

    @property
    def dimension_terms(self) -> dict[str, Any] | None:
        """When ``r(s)`` is a product of one term per QualEQS dimension (each term using only
        that dimension's signals, as in ``qualeqs`` and ``qualeqs-taught``), those terms: the
        response's dimension fields are then their values, so that the reward is their product
        as the contract says. None for any other shape (the fields are the judge's)."""
        terms = self.suggestion.get("product") if isinstance(self.suggestion, dict) else None
        if not isinstance(terms, list) or len(terms) != len(DIMENSIONS):
            return None
        out: dict[str, Any] = {}
        for term in terms:
            used = {name.rsplit(".", 1)[-1] for name in _names(term)}
            if len(used) != 1 or not used <= set(DIMENSIONS) or used & set(out):
                return None
            out[used.pop()] = term
        return out

    @cached_property
    def pass_thresholds(self) -> dict[str, float] | None:
        """When every dimension is a stacker, the stored calibration as a cut on each
        dimension field: its ``threshold`` (the stacked probability's best balanced accuracy
        out of fold) raised to its ``power``, as the field is. Pass/fail measures read it
        (``eqs-reward eval``: agreement, kappa, precision and recall); the reward keeps the
        probability, in binary mode too (see ``_stacked``). None for any other recipe."""
        terms = self.dimension_terms
        if terms is None or not all(isinstance(terms[d], dict) for d in DIMENSIONS):
            return None
        stacks = [terms[d].get("stacked") for d in DIMENSIONS]
        if not all(isinstance(stack, dict) for stack in stacks):
            return None
        return {
            d: float(stack["threshold"]) ** float(stack["power"])
            for d, stack in zip(DIMENSIONS, stacks, strict=True)
        }

    def dimensions(self, signals: Mapping[str, float]) -> dict[str, float] | None:
        """Each dimension's value (see ``dimension_terms``), or None."""
        terms = self.dimension_terms
        if terms is None:
            return None
        return {d: _evaluate(terms[d], signals, ()) for d in DIMENSIONS}

    def set_reward(
        self,
        format_reward: float,
        rows: Sequence[Mapping[str, float]],
        set_signals: Mapping[str, float],
    ) -> float:
        """``r_q``; each row is a suggestion's signals with its ``reward``."""
        return _evaluate(self.set, {"format": format_reward, **set_signals}, rows)

    def describe(self) -> dict[str, Any]:
        """For ``GET /v1/recipes``."""
        return {
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "heads": {
                name: {
                    "settings": settings,
                    "signals": list(HEAD_SIGNALS[name]),
                    "set_signals": list(HEAD_SET_SIGNALS[name]),
                }
                for name, settings in self.heads.items()
            },
            "suggestion_reward": self.suggestion,
            "set_reward": self.set,
            "fit": self.fit,
            "pass_thresholds": self.pass_thresholds,
        }

    @classmethod
    def from_toml(cls, path: Path) -> Recipe:
        return cls.from_dict(read_versioned(path, RecipeError, "recipe"), path)

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> Recipe:
        """The recipe a server describes (``GET /v1/recipes``), checked like a file: what
        offline measures read, so that they compute with the recipe the server runs."""
        data = {
            "id": described["id"],
            "version": described["version"],
            "description": described.get("description", ""),
            "heads": {h: spec.get("settings", {}) for h, spec in described["heads"].items()},
            "suggestion_reward": described["suggestion_reward"],
            "set_reward": described["set_reward"],
        }
        if described.get("fit") is not None:
            data["fit"] = described["fit"]
        return cls.from_dict(data, Path(f"<served {described['id']}>"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> Recipe:
        """A recipe from its parsed TOML (``path``: where it came from, for errors)."""
        recipe_id = data["id"]
        if not VERSION_ID.match(recipe_id):
            raise RecipeError(f"{path}: invalid recipe id {recipe_id!r}")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RecipeError(f"{path}: version must be a positive integer")
        heads = data.get("heads", {})
        if not isinstance(heads, dict) or not heads:
            raise RecipeError(f"{path}: name at least one head under [heads.<name>]")
        unknown = set(heads) - set(HEAD_SIGNALS)
        if unknown:
            known = sorted(HEAD_SIGNALS)
            raise RecipeError(f"{path}: unknown heads {sorted(unknown)} (known: {known})")
        for name, settings in heads.items():
            _check_settings(path, name, settings)
        per = frozenset(f"{h}.{s}" for h in heads for s in HEAD_SIGNALS[h])
        sets = frozenset(f"{h}.{s}" for h in heads for s in HEAD_SET_SIGNALS[h])
        for part in ("suggestion_reward", "set_reward"):
            if part not in data:
                raise RecipeError(f"{path}: missing {part}")
        fit = data.get("fit")
        if fit is not None and not (
            isinstance(fit, dict)
            and all(isinstance(fit.get(k), str) for k in ("judge_model", "prompt_version"))
            and isinstance(fit.get("taught", ""), str)
        ):
            raise RecipeError(
                f"{path}: [fit] needs judge_model and prompt_version (strings; taught, when "
                "given, a string too)"
            )
        _check(data["suggestion_reward"], _Scope(per, False), f"{path.name}:suggestion_reward")
        _check(data["set_reward"], _Scope(per, True, sets), f"{path.name}:set_reward")
        return cls(
            id=recipe_id,
            version=version,
            description=str(data.get("description", "")),
            heads={name: dict(settings or {}) for name, settings in heads.items()},
            suggestion=data["suggestion_reward"],
            set=data["set_reward"],
            source=data,
        )


def _check_settings(path: Path, head: str, settings: Any) -> None:
    if not isinstance(settings, dict):
        raise RecipeError(f"{path}: [heads.{head}] must be a table")
    allowed = HEAD_SETTINGS[head]
    for key, value in settings.items():
        if key not in allowed:
            raise RecipeError(
                f"{path}: [heads.{head}] has no setting {key!r} (known: {sorted(allowed)})"
            )
        if isinstance(value, bool) or not isinstance(value, allowed[key]):
            raise RecipeError(f"{path}: [heads.{head}] {key} has the wrong type")


def load_recipes(folder: Path) -> dict[str, Recipe]:
    """Every recipe in ``folder`` by id."""
    recipes = {}
    for path in sorted(folder.glob("*.toml")):
        recipe = Recipe.from_toml(path)
        recipes[recipe.id] = recipe
    if not recipes:
        raise RecipeError(f"no recipes in {folder}")
    return recipes
