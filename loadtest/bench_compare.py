"""Two versions of the code side by side in one run: the added latency and the cache-hit path.

    python -m loadtest.bench_compare --base <git ref> [--rounds 3] [--quick]

A refactor must not slow the service down, and these machines are noisy: a figure measured an
hour ago is not comparable with one measured now. So this runs ``loadtest.bench``'s overhead
and cache sections for the base (``git archive`` of the ref, unpacked in a temporary folder) and
for this checkout, alternating base, head, head, base ... within one invocation, each in its
own process with its own source on ``PYTHONPATH``, and prints the medians and head/base ratios
side by side. Each side runs its own ``loadtest/bench.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from loadtest._results import section as results_section
from loadtest._results import write_sections

ROOT = Path(__file__).resolve().parent.parent

#: (section, path into the section's JSON, label, lower is better)
FIGURES: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("overhead", ("median", "unloaded_added_p50_ms"), "added latency p50, unloaded (ms)", True),
    ("overhead", ("median", "added_p50_ms"), "added latency p50, loaded (ms)", True),
    ("overhead", ("median_ratio",), "throughput through the service / direct", False),
    ("cache", ("memory", "suggestions_per_s"), "cache hits, memory tier (suggestions/s)", False),
    ("cache", ("redis", "suggestions_per_s"), "cache hits, Redis tier (suggestions/s)", False),
    (
        "cache",
        ("in_process_scorer", "suggestions_per_s"),
        "scorer alone, cache hits (suggestions/s)",
        False,
    ),
]


def unpack(ref: str, into: Path) -> Path:
    """The tree of ``ref`` (a commit of this repository), unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_side(tree: Path, out: Path, quick: bool) -> dict[str, Any]:
    """One run of ``tree``'s own benchmark (overhead and cache), its own code imported."""
    env = {**os.environ, "PYTHONPATH": str(tree / "service") + os.pathsep + str(tree)}
    argv = [sys.executable, "-m", "loadtest.bench", "--only", "overhead,cache"]
    argv += ["--json", str(out), "--results", str(out.with_suffix(".md"))]
    if quick:
        argv.append("--quick")
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stdout[-2000:]}{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def figure(result: dict[str, Any], section: str, path: tuple[str, ...]) -> float | None:
    value: Any = result.get(section)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def compare(base: list[dict[str, Any]], head: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for section, path, label, lower in FIGURES:
        b = [v for r in base if (v := figure(r, section, path)) is not None]
        h = [v for r in head if (v := figure(r, section, path)) is not None]
        if not b or not h:
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        rows.append(
            {
                "figure": label,
                "base": mb,
                "head": mh,
                "head_over_base": mh / mb if mb else None,
                "lower_is_better": lower,
            }
        )
    return rows


def render(rows: list[dict[str, Any]], base_ref: str, head_ref: str, rounds: int) -> str:
    lines = [
        f"| figure (median of {rounds} runs each, alternating) | base `{base_ref}` | "
        f"head `{head_ref}` | head / base |",
        "|---|---|---|---|",
    ]
    for r in rows:
        ratio = "n/a" if r["head_over_base"] is None else f"{r['head_over_base']:.2f}"
        better = "lower is better" if r["lower_is_better"] else "higher is better"
        lines.append(f"| {r['figure']} ({better}) | {r['base']:.2f} | {r['head']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git ref of the old code")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the tests' run)")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument(
        "--results", default=None, help="write the table as RESULTS.md's 'compare' section"
    )
    args = parser.parse_args(argv)
    head_ref = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    results: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="eqs-bench-compare-") as tmp:
        base_tree = unpack(args.base, Path(tmp) / "base")
        trees = {"base": base_tree, "head": ROOT}
        for n in range(args.rounds):
            order = ("base", "head") if n % 2 == 0 else ("head", "base")
            for side in order:
                print(f"round {n + 1}: {side} ...", flush=True)
                out = Path(tmp) / f"{side}-{n}.json"
                results[side].append(run_side(trees[side], out, args.quick))
    rows = compare(results["base"], results["head"])
    table = render(rows, args.base, head_ref, args.rounds)
    print(table)
    if args.results:
        command = "python -m loadtest.bench_compare " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        body = (
            "The overhead and cache sections of `loadtest.bench` for two versions of the code, "
            "each run in its own process with its own source, alternating base and head. "
            "Ratios below 1 are a slowdown for 'higher is better' figures, above 1 for 'lower "
            "is better' ones; the loaded figures share two cores between the load generator, "
            "the service and the stub judge: they are the noisiest.\n\n" + table
        )
        title = "7. Old and new code side by side"
        write_sections(
            Path(args.results), {"compare": results_section("compare", title, body, command)}
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
