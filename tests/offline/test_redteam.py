"""``eqs-reward redteam`` against a real service on the stub judge (which passes everything it
is asked): every corpus attack is refused by the guard before the judge sees it and rewarded 0,
in every family; the legitimate suggestions are scored; the taught head's column is filled; the
JSON report, the table and the plot agree."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from eqs_reward.cli import main
from tests._helpers import ServerProcess


def test_the_red_team_report_zeroes_every_attack_family(
    tmp_path: Path,
    running_service: Callable[..., ServerProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = running_service()
    out = tmp_path / "redteam"
    assert main(["redteam", "--url", service.url, "--legit", "20", "--out", str(out)]) == 0
    report = json.loads((out / "redteam.json").read_text())
    assert report["families"] and report["held_out"]
    for family, summary in report["families"].items():
        assert summary["attacks"] > 0, family
        assert summary["refused"] == summary["rewarded_zero"] == summary["attacks"], family
        assert summary["succeeded"] == 0, family
        assert 0.0 <= summary["taught_mean"] <= 1.0, family
    overall = report["overall"]
    assert overall["attacks"] == sum(s["attacks"] for s in report["families"].values())
    legit = report["legit"]
    assert legit["scored"] == 20 and legit["refused"] < legit["scored"]
    assert not math.isnan(legit["taught_median"])
    assert report["meta"]["judge_model"] == "stub" and report["meta"]["calibrated"] is False
    printed = capsys.readouterr().out
    for family in report["families"]:
        assert family in printed
    assert "all attacks" in printed and (out / "redteam.png").stat().st_size > 10_000
