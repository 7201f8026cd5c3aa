"""slime's remote reward model against the service, replayed with slime's own request code
(vendored in ``tests/client/slime/``, commit 624b824, Apache-2.0): the answer is the reward as a
bare number, the same as ``/v1/score`` gives the same text, and a failed sample is neutral."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import pytest

from tests._helpers import FAILME, ServerProcess
from tests.client.slime import remote_rm as slime

PROMPT = [{"role": "user", "content": "Suggest 3 follow-ups for: blender for smoothies"}]
GOOD = ["Which blenders under $80 can crush ice?", "Are there glass jar blenders with 1000 W?",
        "Do you have Vitamix blenders with a 7-year warranty?"]  # fmt: skip
SHORT = ["Blenders under $50?", "Any glass blenders here?", "Quiet blenders for mornings?"]


def completion(options: list[str]) -> str:
    return json.dumps({"options": options})


async def replay(url: str, samples: list[tuple[object, str, object]]) -> list[object]:
    """slime's ``remote_rm`` for each sample in turn, as its rollout does; its session closed."""
    args = SimpleNamespace(rm_url=url)
    try:
        return [
            await slime.remote_rm(args, SimpleNamespace(prompt=p, response=r, label=label))
            for p, r, label in samples
        ]
    finally:
        if slime._shared_session is not None:
            await slime._shared_session.close()


def test_slime_gets_the_same_reward_as_v1_score(stub_service: ServerProcess) -> None:
    rewards = asyncio.run(
        replay(
            stub_service.url + "/slime",
            [
                (PROMPT, completion(GOOD), None),
                ("blender for smoothies", completion(SHORT), "blender for smoothies"),
            ],
        )
    )
    assert all(isinstance(r, float) for r in rewards)
    direct = httpx.post(
        stub_service.url + "/v1/score",
        json={
            "items": [
                {"context": {"query": PROMPT[0]["content"]}, "completion": completion(GOOD)},
                {"context": {"query": "blender for smoothies"}, "completion": completion(SHORT)},
            ],
            "options": {"k": 3, "score_mode": "soft"},
        },
    ).json()
    assert rewards == pytest.approx([r["reward"] for r in direct["results"]])


def test_a_failed_sample_gets_its_groups_mean(stub_service: ServerProcess) -> None:
    url = stub_service.url + "/slime?group_size=4"
    query = "blender for a 4-person family"
    samples = [(query, completion(GOOD), None), (query, completion(SHORT), None)]
    samples += [(query, completion([o + " ok" for o in GOOD]), None)]
    samples += [(query, completion([f"{FAILME} {o}" for o in GOOD]), None)]
    *judged, failed = asyncio.run(replay(url, samples))
    assert failed == pytest.approx(sum(judged) / 3)  # neutral under GRPO's normalisation
    alone = asyncio.run(
        replay(stub_service.url + "/slime", [(query, completion([f"{FAILME} x"] * 3), None)])
    )
    assert alone == [0.0]  # no group to take a mean from
