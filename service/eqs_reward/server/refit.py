"""Keeping a stacking recipe fit for the judge and taught head the service runs.

A recipe that stacks (``qualeqs-taught``) combines the judge's soft scores with the taught
head's by coefficients fit on the judge's scores of labeled cases: for one judge model and
prompt, and the taught head of one embedder, named in the recipe's ``[fit]`` table
(``recipes.FitFor``). Another judge reads the same cases on another scale (a large judge is
worth far more weight than the 135M embedded one), and another embedder
(``EQS_REWARD_EMBEDDINGS_URL``) spreads the taught head's log-odds differently, so at start the
service compares every stacking recipe's fit with its own:

- a fit for them that this service made before
  (``<data dir>/recipe-fits/<judge>--<prompt>--<taught head>/``) of the same packaged recipe
  version (its ``[fit] refit_of``) replaces the packaged recipe, so switching judges back and
  forth refits each once, and an upgrade that ships a new version of the recipe is refit again;
- otherwise the recipe is **stale**: logged, ``eqs_reward_recipe_fit_stale{recipe}`` is 1 and
  ``GET /v1/recipes`` shows its ``fit``. With ``EQS_REWARD_RECIPE_REFIT=background`` (the
  default) the service refits it in the background, as ``eqs-reward fidelity fit`` does: it
  scores the packaged fitting cases with the judge alone (recipe ``qualeqs``, soft, at the
  active bank version, whose examples are left out of the fit because they are in the judge's
  prompt), fits the stacking (``eqs_reward.offline.stacking.fit_scored``), writes it there and
  swaps it in. Requests are served meanwhile with the stale fit, and every response names the
  recipe version it used (``meta.recipe.version``: the refit is a new version, so no cached
  score of the old one is reused). A failed refit (judge down) is retried with backoff.

Under Ray Serve every replica refits on its own; their judge calls are shared through the Redis
cache and the in-flight claim, and the fit is deterministic for the same scores, so the replicas
arrive at the same recipe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eqs_reward.judge import JudgeError
from eqs_reward.server.recipes import FitFor, Recipe, RecipeError
from eqs_reward.server.schemas import ScoreRequest
from eqs_reward.types import SuggestionScore

if TYPE_CHECKING:
    from eqs_reward.server.scoring import ScoringService
    from eqs_reward.server.settings import Settings

__all__ = ["Refitter", "fits_dir", "refittable", "with_stored_fits"]

log = logging.getLogger("eqs_reward.refit")

#: The judge-only recipe whose soft scores the stacking is fit on (the paper's).
JUDGE_RECIPE = "qualeqs"
#: Cases per internal scoring batch: each must end within the request deadline on a slow judge.
BATCH = 32
#: A refit needs the judge's scores of at least this share of the fitting cases.
MIN_SCORED = 0.9
#: Seconds between readiness probes of a judge still starting, before the first refit.
JUDGE_WAIT_S = 2.0
#: Seconds before retrying a failed refit: doubled each time, up to the last.
RETRY_S = (30.0, 60.0, 120.0, 300.0, 600.0)


def fits_dir(settings: Settings, target: FitFor) -> Path:
    """Where this service keeps its fits for one judge, prompt and taught head family."""
    named = f"{target.judge_model}--{target.prompt_version}--{target.taught}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", named)
    return settings.data_dir / "recipe-fits" / slug


def with_stored_fits(
    recipes: dict[str, Recipe], settings: Settings, target: FitFor
) -> dict[str, Recipe]:
    """``recipes`` with every stale stacking recipe replaced by this service's stored fit for
    ``target``, where there is one (a broken file is logged and skipped)."""
    folder = fits_dir(settings, target)
    out = dict(recipes)
    for name, recipe in recipes.items():
        path = folder / f"{name}.toml"
        if recipe.fit_for(target) or not path.is_file():
            continue
        try:
            stored = Recipe.from_toml(path)
        except RecipeError as exc:
            log.warning("ignoring a stored recipe fit: %s", exc)
            continue
        # a fit of this very recipe version (an upgrade that ships another one is refit)
        if stored.fit_for(target) and stored.refit_of == recipe.version:
            out[name] = stored
    return out


class Refitter:
    """Reports and (when set to) refits the service's stale stacking recipes."""

    def __init__(self, scoring: ScoringService) -> None:
        self.scoring = scoring
        self.settings = scoring.settings
        self.target = scoring.fit_target

    def stale(self) -> list[str]:
        """The stacking recipes not fit for this service's judge, prompt and taught head."""
        return sorted(
            name for name, recipe in self.scoring.recipes.items() if not recipe.fit_for(self.target)
        )

    def report(self) -> list[str]:
        """Log and export which recipes are stale; return them."""
        stale = self.stale()
        for name, recipe in self.scoring.recipes.items():
            self.scoring.metrics.recipe_fit_stale.labels(name).set(1 if name in stale else 0)
            if name in stale:
                log.warning(
                    "recipe %s was fit for %s; this service runs %s: %s",
                    recipe.key,
                    _described(recipe.fit),
                    _described(dataclasses.asdict(self.target)),
                    "refitting it in the background"
                    if self.settings.recipe_refit == "background"
                    else "EQS_REWARD_RECIPE_REFIT=background or `eqs-reward fidelity fit` "
                    "refits it",
                )
        return stale

    async def run(self, stale: list[str]) -> None:
        """Refit the ``stale`` recipes (``report()``'s), retrying each until it is done (a
        background task), once the judge answers."""
        if stale:
            await self._judge_answers()
        for name in stale:
            recipes = self.scoring.recipes
            if not refittable(recipes[name]) or JUDGE_RECIPE not in recipes:
                log.error(
                    "cannot refit %s: only the shape `eqs-reward fidelity fit` writes (a stacker "
                    "over judge.<d> and taught.<d> per dimension, the paper's set reward) is "
                    "refit, with a recipe %r to score the judge alone",
                    name,
                    JUDGE_RECIPE,
                )
                continue
            for attempt in itertools.count():
                try:
                    await self.refit(name)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the judge, the store: retried, never a crash
                    self.scoring.metrics.recipe_refits.labels(name, "failed").inc()
                    wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                    log.warning("refitting %s failed (%s); retrying in %.0f s", name, exc, wait)
                    await asyncio.sleep(wait)

    async def _judge_answers(self) -> None:
        """Wait until the judge answers its readiness probe: the embedded judge takes about a
        minute to start, and a refit begun before it would fail every call and then wait out
        a backoff (seen: 691 failed calls, then 30 s idle with the judge up)."""
        while True:
            try:
                await self.scoring.judge.ping()
                return
            except JudgeError:
                await asyncio.sleep(JUDGE_WAIT_S)

    async def refit(self, name: str) -> Recipe:
        """Fit ``name``'s stacking on this judge's scores, store it and swap it in."""
        from eqs_reward.server.heads import stacking

        scoring = self.scoring
        active = await scoring.bank.active()
        cases = stacking.stacking_cases(active.examples)
        scored = await self._judge(cases, active.version)
        ok = sum(1 for s in scored if s.status == "ok")
        if ok < MIN_SCORED * len(cases):
            raise RuntimeError(f"the judge scored {ok} of {len(cases)} fitting cases")
        taught = await stacking.oof_taught(cases, active.examples, scoring.heads.taught)
        fit = await asyncio.to_thread(stacking.fit_scored, cases, scored, taught)
        path = fits_dir(self.settings, self.target) / f"{name}.toml"
        base = scoring.recipes[name].version
        await asyncio.to_thread(stacking.write_recipe, path, fit, self.target, base)
        recipe = Recipe.from_toml(path)
        scoring.install_recipe(recipe)
        scoring.metrics.recipe_fit_stale.labels(name).set(0)
        scoring.metrics.recipe_refits.labels(name, "done").inc()
        log.info(
            "recipe %s refit for %s on %d cases: %s",
            recipe.key,
            _described(dataclasses.asdict(self.target)),
            fit["cases"],
            path,
        )
        return recipe

    async def _judge(self, cases: Sequence[dict[str, Any]], version: int) -> list[SuggestionScore]:
        """The judge's soft scores of ``cases`` (through the cache and the judge pool, in
        batches, at the pinned bank version; internal: never sampled for review)."""
        scoring = self.scoring
        bank_version = await scoring.bank.get(version)
        out: list[SuggestionScore] = []
        for start in range(0, len(cases), BATCH):
            request = ScoreRequest.model_validate(
                {
                    "items": [
                        {"context": c["context"], "suggestions": [c["suggestion"]]}
                        for c in cases[start : start + BATCH]
                    ],
                    "options": {
                        "k": 1,
                        "score_mode": "soft",
                        "recipe": JUDGE_RECIPE,
                        "fewshot_version": version,
                    },
                },
                strict=False,
            )
            response = await scoring.score(request, bank_version=bank_version)
            out += [result.suggestions[0] for result in response.results]
        return out


def refittable(recipe: Recipe) -> bool:
    """Whether ``recipe`` has the shape the fit writes (see ``Refitter.run``)."""
    terms = recipe.dimension_terms
    return (
        terms is not None
        and all(
            isinstance(term, dict)
            and isinstance(term.get("stacked"), dict)
            and term["stacked"].get("terms") == [f"judge.{d}", f"taught.{d}"]
            for d, term in terms.items()
        )
        and recipe.set == {"product": ["format", {"mean_over": "reward"}]}
    )


def _described(fit: dict[str, Any] | None) -> str:
    if fit is None:
        return "no judge it names"
    taught = f", taught head {fit['taught']}" if "taught" in fit else ""
    return f"judge {fit['judge_model']} with prompt {fit['prompt_version']}{taught}"
