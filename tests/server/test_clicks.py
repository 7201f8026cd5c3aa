"""The click model: fitted on logs drawn from a known click function, it recovers it; it refuses
bad logs and too few clicks; the head serves it through /v1/score (and 503 before one exists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from eqs_reward import _resources
from eqs_reward.cli import main
from eqs_reward.clicks import (
    ClickLogError,
    ClickModel,
    ClickStore,
    Impression,
    _split,
    fit_click_model,
    read_impressions,
)
from tests._helpers import assert_envelope

LOGS = _resources.demo_dir() / "clicks.jsonl"


def test_a_fit_recovers_the_known_click_function() -> None:
    rows = [json.loads(line) for line in LOGS.read_text().splitlines()[1:]]
    impressions = read_impressions(LOGS)
    model = fit_click_model(impressions)
    _, held = _split(impressions, 0)
    clicked = [rows[n]["clicked"] for n in held]
    truth = roc_auc_score(clicked, [rows[n]["p_true"] for n in held])  # the function's own AUC
    fitted = model.report["held_out_roc_auc"]
    assert abs(fitted - truth) < 0.03, (fitted, truth)
    # Calibrated: in every held-out bin the observed click rate is near the predicted one.
    for row in model.report["calibration"]:
        assert abs(row["predicted"] - row["observed"]) < 0.1, row
    # A budget and a brand raise P(click); a later position lowers it, as the function says.
    strong, weak, late = model.predict(
        [
            Impression("router", "Any Netgear Wi-Fi 6 routers under $200?", 0),
            Impression("router", "More routers?", 0),
            Impression("router", "Any Netgear Wi-Fi 6 routers under $200?", 2),
        ]
    )
    assert strong > late > weak


def test_bad_logs_and_too_few_clicks_say_so(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"query": "desk", "suggestion": "Any?", "position": -1, "clicked": "yes"})
        + "\n"
        + json.dumps({"suggestion": "", "position": 0, "clicked": True})
        + "\n"
    )
    with pytest.raises(ClickLogError) as caught:
        read_impressions(bad)
    message = str(caught.value)
    for part in ("row 1, position", "row 1, clicked", "row 2, query", "row 2, suggestion"):
        assert part in message
    few = [Impression(f"q{n}", f"Any {n}?", 0, n % 10 == 0) for n in range(300)]
    with pytest.raises(ClickLogError, match="at least 100 clicks"):
        fit_click_model(few)


def test_the_stored_model_is_json_and_versioned(tmp_path: Path) -> None:
    store = ClickStore(tmp_path)
    model = fit_click_model(read_impressions(LOGS))
    first = store.save(model)
    second = store.save(ClickModel.from_json(model.to_json()))
    assert (first.name, second.name) == ("v1.json", "v2.json")
    again = store.latest()
    assert again is not None and again.version == 2
    probe = [Impression("sofa", "Any IKEA velvet sofas under $500?", 1)]
    assert again.predict(probe) == pytest.approx(model.predict(probe))


def test_the_head_serves_the_model_through_the_api(
    make_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    client: TestClient = make_client()
    body = {
        "items": [
            {
                "context": {"query": "I want a blender for smoothies"},
                "suggestions": [
                    "Any Vitamix glass jar blenders under $300?",
                    "More blenders?",
                    "Which Ninja blenders are quiet?",
                ],
            }
        ],
        "options": {"recipe": "qualeqs-clicks"},
    }
    message = assert_envelope(client.post("/v1/score", json=body), 503, "unavailable")
    assert "eqs-reward clicks fit" in message
    monkeypatch.setenv("EQS_REWARD_DATA_DIR", str(tmp_path))  # the app's data_dir (make_client)
    assert main(["clicks", "fit", "--demo"]) == 0
    assert "stored as click model version 1" in capsys.readouterr().out
    client.app.state.scoring.heads.clicks._model.expire()  # type: ignore[attr-defined]
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["meta"]["recipe"]["heads"]["clicks"] == "clicks-v1"
    (result,) = data["results"]
    model = ClickStore(tmp_path / "clicks").latest()
    assert model is not None
    texts = [s["text"] for s in result["suggestions"]]
    expected = model.predict(
        [Impression("I want a blender for smoothies", t, n) for n, t in enumerate(texts)]
    )
    taps = [s["signals"]["clicks.p_click"] for s in result["suggestions"]]
    assert taps == pytest.approx(expected)
    missed = (1 - taps[0]) * (1 - taps[1]) * (1 - taps[2])
    assert result["set_signals"]["clicks.any_click"] == pytest.approx(1 - missed)
    for s in result["suggestions"]:
        quality = s["answerability"] * s["factuality"] * s["information_gain"]
        assert s["reward"] == pytest.approx(0.8 * quality + 0.2 * s["signals"]["clicks.p_click"])
