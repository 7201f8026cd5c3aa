"""Every benchmark's quick mode runs in CI (issue 20: ``make bench`` had rotted unseen), and
RESULTS.md keeps one section per benchmark, each rewritten only by its own command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import bench, bench_catalog, bench_review
from loadtest._results import write_sections


def test_every_stub_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    argv = ["--quick", "--only", "overhead,cache,memory,taught", "--results", str(results)]
    assert bench.main(argv) == 0
    text = results.read_text()
    for key in ("overhead", "cache", "memory", "taught"):
        assert f"<!-- section:{key} -->" in text and f"<!-- /section:{key} -->" in text
    assert "command: `python -m loadtest.bench --quick" in text and "- machine: " in text
    assert "section:e2e" not in text  # it did not run, so it is not invented


def test_the_catalog_benchmark_runs_in_quick_mode_and_keeps_other_sections(
    tmp_path: Path,
) -> None:
    results = tmp_path / "RESULTS.md"
    write_sections(
        results, {"overhead": "<!-- section:overhead -->\nkept\n<!-- /section:overhead -->"}
    )
    assert bench_catalog.main(["--quick", "--results", str(results)]) == 0
    text = results.read_text()
    assert "\nkept\n" in text and "<!-- section:catalog -->" in text
    assert "1,000 products" in text
    before = text
    assert bench_catalog.main(["--quick", "--results", str(results)]) == 0
    after = results.read_text()
    assert after.count("<!-- section:catalog -->") == 1 and after.index("kept") == before.index(
        "kept"
    )


def test_quick_mode_leaves_the_committed_results_alone(tmp_path: Path) -> None:
    committed = Path(bench.ROOT) / "loadtest" / "RESULTS.md"
    before = committed.read_bytes()
    assert bench.main(["--quick", "--only", "memory"]) == 0
    assert committed.read_bytes() == before


def test_two_versions_compare_side_by_side_in_one_run(tmp_path: Path) -> None:
    """The refactor benchmark (``loadtest.bench_compare``): both sides run, alternating, each its
    own code, and every figure is printed for both with the ratio. Against HEAD itself here
    (the figures are not asserted: these machines are noisy, and tests assert no timings)."""
    from loadtest import bench_compare

    out = tmp_path / "rows.json"
    argv = ["--base", "HEAD", "--rounds", "1", "--quick", "--json", str(out)]
    assert bench_compare.main(argv) == 0
    rows = json.loads(out.read_text())
    figures = {row["figure"] for row in rows}
    assert any("added latency" in f for f in figures) and any("cache hits" in f for f in figures)
    rates = [row for row in rows if "latency" not in row["figure"]]
    assert rates and all(row["base"] > 0 and row["head"] > 0 for row in rates)


def test_the_review_queue_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    """The queue off and on (every suggestion sampled), side by side: no request fails."""
    out = tmp_path / "review.json"
    assert bench_review.main(["--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["median"]) == {"off", "on"}
    assert all(r["errors"] == 0 for side in report["rounds"].values() for r in side)


@pytest.mark.ray
def test_the_judge_fleet_benchmark_runs_in_quick_mode(tmp_path: Path, redis_url: str) -> None:
    """Two judge replicas behind Serve's router against one, on a real two-node Ray cluster
    (the throughput ratio is the committed run's to judge, never a test's), and one GRPO step
    through two service replicas calls the judge once per distinct suggestion."""
    from loadtest import bench_fleet

    results = tmp_path / "RESULTS.md"
    argv = ["--quick", "--redis-url", redis_url, "--json", str(tmp_path / "fleet.json")]
    assert bench_fleet.main([*argv, "--results", str(results)]) == 0
    report = json.loads((tmp_path / "fleet.json").read_text())
    assert report["replicas_1_calls_per_s"] > 0 and report["replicas_2_calls_per_s"] > 0
    step = report["grpo_step"]
    assert step["judge_calls"] == step["distinct"] and step["duplicates"] == 0
    assert "<!-- section:fleet -->" in results.read_text()
