"""The veRL adapter with a pinned recipe (``EQS_REWARD_RECIPE``), in veRL 0.9.1's own reward loop
with its Ray workers (a session of this module's own: the workers' environment is fixed when Ray
starts). Every sample reports every signal of the blended recipe, failed ones included, so veRL's
merge of ``reward_extra_info`` finds the same keys everywhere."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("verl")
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop import RewardLoopManager

from tests._helpers import ServerProcess
from tests.client._completions import BAD, GOOD, SHORT, text
from tests.client._verl import KEYS, batch, config, ray_session

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

BLEND = {"judge.answerability", "judge.factuality", "judge.information_gain",
         "exclusivity.novelty", "exclusivity.distinctness", "shopper.tap",
         "exclusivity.diversity", "shopper.any_tap"}  # fmt: skip


@pytest.fixture(scope="module")
def blend_env(stub_service: ServerProcess) -> Iterator[dict[str, str]]:
    with ray_session(stub_service.url, EQS_REWARD_RECIPE="qualeqs-blend") as env:
        yield env


def test_a_pinned_recipe_reaches_every_sample_with_every_signal(
    blend_env: dict[str, str], stub_service: ServerProcess, smollm2: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    completions = [(text(BAD), False), (text(GOOD), False), (text(SHORT), True), (text(GOOD), True)]
    data = batch(tokenizer, completions, ["a"] * 4, ["blender for a recipe"] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop = RewardLoopManager(config(smollm2, "naive"))
        scored = loop.compute_rm_score(data)
    default_only = {"recipe:qualeqs"}
    expected_keys = (KEYS - default_only) | BLEND | {"recipe:qualeqs-blend"}
    assert set(scored.meta_info["reward_extra_keys"]) == expected_keys
    extra = scored.non_tensor_batch
    assert extra["failed"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert set(extra["recipe_version"].tolist()) == {1.0}
    # The same numbers as /v1/score gives the same completion under the same recipe.
    direct = httpx.post(
        stub_service.url + "/v1/score",
        json={
            "items": [
                {
                    "context": {"query": "blender for a recipe"},
                    "completion": text(GOOD),
                }
            ],
            "options": {"recipe": "qualeqs-blend", "score_mode": "soft", "fewshot_version": 1},
        },
    ).json()["results"][0]
    scores = scored.batch["rm_scores"].sum(dim=-1)
    assert scores[1].item() == pytest.approx(direct["reward"], rel=1e-5)
    assert extra["shopper.any_tap"][1] == pytest.approx(direct["set_signals"]["shopper.any_tap"])
    assert extra["exclusivity.diversity"][1] == pytest.approx(
        direct["set_signals"]["exclusivity.diversity"]
    )
