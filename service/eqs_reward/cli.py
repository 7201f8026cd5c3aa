"""``eqs-reward``: serve rewards, run the embedded judge, score files, operate the few-shot bank,
train, mine and evaluate.

Each command imports only what its audience installed; a command whose extra is missing says
which one to install instead of a traceback. Calls to a running service go through
``eqs_reward.client`` (its retries, its error messages, the admin token from
``EQS_REWARD_ADMIN_TOKEN``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import JsonlError, iter_jsonl, read_jsonl
from eqs_reward._version import __version__
from eqs_reward.client import RewardClient, RewardServiceError
from eqs_reward.types import DIMENSIONS, ItemResult

log = logging.getLogger("eqs_reward.cli")

# The modules each extra brings, checked before a command imports them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "pydantic_settings", "redis", "prometheus_client", "sklearn"),
    "embedded": ("vllm", "transformers", "safetensors", "gguf"),
    "train": ("trl", "datasets", "transformers", "matplotlib"),
    "eval": ("sklearn", "matplotlib"),
}
DEFAULT_URL = "http://127.0.0.1:8000"


class MissingExtra(SystemExit):
    """A command needs an extra that is not installed (exit status 2, with the pip line)."""

    def __init__(self, extra: str, command: str, missing: list[str], hint: str = "") -> None:
        message = (
            f"eqs-reward {command} needs the '{extra}' extra (missing: {', '.join(missing)}): "
            f"pip install 'eqs-reward[{extra}]'{hint}"
        )
        print(message, file=sys.stderr)
        super().__init__(2)


def require(extra: str, command: str, hint: str = "") -> None:
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(extra, command, missing, hint)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per judge call drowns the log at training rates; failures are logged by us.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _settings(**overrides: Any) -> Any:
    require("server", "this command")
    from eqs_reward.server.settings import Settings

    return Settings(**overrides)


# -- serving ------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    require("server", "serve")
    import uvicorn

    from eqs_reward.server import build_app
    from eqs_reward.server._uvicorn import with_header_timeout

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = _settings(**overrides)
    _configure_logging(settings.log_level)
    if settings.embedded:
        require(
            "embedded",
            "serve",
            hint=" (or set EQS_REWARD_JUDGE_URL to a running OpenAI-compatible judge)",
        )
        log.info(
            "no EQS_REWARD_JUDGE_URL: starting the embedded judge (vLLM CPU, SmolLM2-135M) on "
            "port %d; /v1/score answers 503 until it is ready (about a minute)",
            settings.embedded_port,
        )
    app = build_app(settings)
    # One worker process per container: scale with replicas (metrics stay single-process).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=5,
        http=with_header_timeout(settings.http_header_timeout_s),
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    require("server", "judge")
    require("embedded", "judge")
    from eqs_reward.server._app import embedded_judge
    from eqs_reward.server.metrics import Metrics

    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["embedded_port"] = args.port
    settings = _settings(**overrides)
    _configure_logging(settings.log_level)

    async def run() -> None:
        judge = embedded_judge(settings, Metrics())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        judge.start()
        await asyncio.wait(
            [asyncio.ensure_future(judge.ready.wait()), asyncio.ensure_future(stop.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if judge.ready.is_set():
            print(
                f"embedded judge ready: EQS_REWARD_JUDGE_URL=http://127.0.0.1:"
                f"{settings.embedded_port}/v1 EQS_REWARD_JUDGE_MODEL={settings.judge_model}",
                flush=True,
            )
        await stop.wait()
        await judge.stop()

    asyncio.run(run())
    return 0


# -- scoring a file -----------------------------------------------------------------------------
def _score_items(path: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for number, row in iter_jsonl(path):
        if "context" not in row and "query" not in row:
            raise JsonlError(f"{path}:{number}: needs 'context' (or 'query') and suggestions")
        item: dict[str, Any] = {
            key: row[key] for key in ("id", "context", "suggestions", "completion") if key in row
        }
        item.setdefault("context", {"query": row.get("query")})
        if "suggestion" in row and "suggestions" not in item:  # a judge_cases row
            item["suggestions"] = [row["suggestion"]]
        items.append(item)
    return items


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.3f}"


def cmd_score(args: argparse.Namespace) -> int:
    items = _score_items(Path(args.file))
    if not items:
        print("no items in the file", file=sys.stderr)
        return 1
    options: dict[str, Any] = {"k": args.k, "score_mode": args.mode}
    results: list[ItemResult] = []
    with RewardClient(
        args.url,
        k=args.k,
        fewshot_version=args.fewshot_version,
        recipe=args.recipe,
        timeout_s=args.timeout,
    ) as client:
        for start in range(0, len(items), args.batch):
            response = client.score(items[start : start + args.batch], **options)
            results.extend(response.results)
            meta = response.meta
    if args.json:
        payload = {"results": [r.to_dict() for r in results], "meta": meta.to_dict()}
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return 0
    print(
        f"judge {meta.judge_model}  prompt {meta.prompt_version}  "
        f"few-shot v{meta.fewshot_version}  mode {meta.score_mode}"
    )
    header = f"{'item':<10} {'sugg':<48} {'ans':>5} {'fac':>5} {'gain':>5} {'r(s)':>5}  status"
    print(header)
    print("-" * len(header))
    for index, (item, result) in enumerate(zip(items, results, strict=True)):
        label = str(result.id or item.get("id") or index)[:10]
        for s in result.suggestions:
            text = s.text.replace("\n", " ")
            text = text if len(text) <= 46 else text[:45] + "…"
            status = s.status + (f" ({s.reason})" if s.reason else "")
            print(
                f"{label:<10} {text:<48} {_fmt(s.answerability)} {_fmt(s.factuality)} "
                f"{_fmt(s.information_gain)} {_fmt(s.reward)}  {status}"
            )
            label = ""
        print(
            f"{'':<10} {'set: r_f=' + _fmt(result.format_reward).strip():<48} "
            f"{'':>5} {'':>5} {'u_q':>5} {_fmt(result.disagreement)}  "
            f"r_q={_fmt(result.reward).strip()} {result.status}"
        )
    return 0


# -- the few-shot bank --------------------------------------------------------------------------
def _example_rows(path: Path) -> list[dict[str, Any]]:
    """Examples from JSONL (the export format, or hand-written cases): ids and timestamps in the
    file are dropped, since ids derive from content; the service validates the rest."""
    rows = read_jsonl(path)
    for row in rows:
        row.pop("id", None)
        row.pop("created_at", None)
    return rows


async def _with_store(settings: Any, action: Callable[[Any], Any]) -> Any:
    import redis.asyncio

    from eqs_reward.judge.cases import load_seed_examples
    from eqs_reward.server.bank import open_store

    client = redis.asyncio.Redis.from_url(settings.redis_url) if settings.redis_url else None
    store = open_store(settings, client)
    try:
        await store.init(load_seed_examples(settings.fewshot_seed_path))
        return await action(store)
    finally:
        await store.close()
        if client is not None:
            await client.aclose()


def cmd_bank_export(args: argparse.Namespace) -> int:
    settings = _settings()

    async def action(store: Any) -> Any:
        return await (store.get(args.version) if args.version else store.active())

    version = asyncio.run(_with_store(settings, action))
    lines = [e.model_dump_json() for e in version.examples]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(lines)} examples of version {version.version} to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_bank_import(args: argparse.Namespace) -> int:
    settings = _settings()
    from pydantic import ValidationError

    from eqs_reward.judge.cases import ExampleIn

    try:
        examples = [ExampleIn.model_validate(r) for r in _example_rows(Path(args.file))]
    except ValidationError as exc:
        print(f"{args.file}: bad example: {exc}", file=sys.stderr)
        return 2

    async def action(store: Any) -> Any:
        return await store.add(examples, args.note or f"import {Path(args.file).name}")

    result = asyncio.run(_with_store(settings, action))
    verb = "created version" if result.created else "nothing new; active version stays"
    print(
        f"{verb} {result.version}: {len(result.added)} added, "
        f"{len(result.duplicates)} already present"
    )
    return 0


def cmd_bank_add(args: argparse.Namespace) -> int:
    with RewardClient(args.url) as client:
        data = client.add_examples(
            _example_rows(Path(args.file)),
            note=args.note,
            expected_version=args.expected_version,
            force=args.force,
        )
    print(f"version {data['version']}: added {data['added']}, already present {data['duplicates']}")
    return 0


def _pair(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return f"{'-':>22}"
    return f"{before:6.3f} -> {after:6.3f} ({after - before:+.3f})"


def cmd_bank_check(args: argparse.Namespace) -> int:
    examples = _example_rows(Path(args.add))
    with RewardClient(args.url, timeout_s=600) as client:
        report = client.check_examples(
            examples, cases=read_jsonl(Path(args.cases)), score_mode=args.mode
        )
    print(
        f"candidate (active v{report['active']['version']} + {len(examples)} examples) on "
        f"{report['cases']} labeled cases, {report['score_mode']} scores: "
        f"{report['verdict'].upper()}"
    )
    print(f"{'':<18} {'agreement':>22} {'AUC':>22}")
    for d in DIMENSIONS:
        a, c = report["active"]["dimensions"][d], report["candidate"]["dimensions"][d]
        print(f"{d:<18} {_pair(a['agreement'], c['agreement'])} {_pair(a['auc'], c['auc'])}")
    print(
        f"{'mean / reward':<18} "
        f"{_pair(report['active']['mean_agreement'], report['candidate']['mean_agreement'])} "
        f"{_pair(report['active']['reward_auc'], report['candidate']['reward_auc'])}"
    )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    with RewardClient(args.url, timeout_s=600) as client:
        fitted = client.calibrate(read_jsonl(Path(args.cases)), version=args.fewshot_version)
    print(f"few-shot v{fitted['version']}: thresholds fitted on {fitted['cases']} cases")
    for d, t in fitted["thresholds"].items():
        print(
            f"  {d:<18} pass if score >= {t:.4f}   agreement "
            f"{fitted['agreement_at_0_5'][d]:.3f} -> {fitted['agreement_fitted'][d]:.3f}"
        )
    return 0


# -- evaluation ---------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    require("eval", "eval")
    from eqs_reward.offline import eval_report

    out = Path(args.out)
    if args.suggestions:
        report = eval_report.run_suggestions(
            args.url, Path(args.suggestions), args.mode, args.fewshot_version, args.recipe or [None]
        )
        eval_report.print_paper_table(report)
        path = eval_report.write(report, out, "paper_metrics")
        print(f"\nreport: {path}")
        return 0
    if args.recipe and len(args.recipe) > 1:
        raise ValueError("--cases takes one --recipe (its heads' signals are compared to labels)")
    report = eval_report.run_cases(
        args.url,
        Path(args.cases),
        args.mode,
        args.fewshot_version,
        args.repeats,
        args.recipe[0] if args.recipe else None,
    )
    eval_report.print_cases_table(report)
    path = eval_report.write(report, out, "report")
    eval_report.plot_cases(report, out / "report.png")
    print(f"\nreport: {path}  plot: {out / 'report.png'}")
    return 0


def cmd_fidelity_report(args: argparse.Namespace) -> int:
    require("server", "fidelity")
    from eqs_reward.offline import fidelity

    with RewardClient(args.url) as client:
        default = client.recipes()["default"]
    prompts = Path(args.prompts_dir) if args.prompts_dir else None
    reports = [
        fidelity.measure(args.url, recipe, mode, split, prompts=prompts)
        for recipe in (args.recipe or [default])
        for mode in (args.mode or ["soft"])
        for split in (args.split or list(fidelity.SPLITS))
    ]
    floors = json.loads(Path(args.floors).read_text()) if args.floors else {}
    command = "eqs-reward fidelity report " + " ".join(sys.argv[3:] if args.out else [])
    text = fidelity.render(reports, floors, command.strip())
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text, encoding="utf-8")
        (out / "report.json").write_text(json.dumps(reports, indent=1, default=str) + "\n")
    if args.readme:
        fidelity.quote_in_readme(Path(args.readme), text)
    failures = [f for r in reports for f in fidelity.check(r, floors)]
    for failure in failures:
        print(f"fidelity gate: {failure}", file=sys.stderr)
    return 1 if failures else 0


def cmd_fidelity_fit(args: argparse.Namespace) -> int:
    require("server", "fidelity")
    from eqs_reward.judge.cases import Example
    from eqs_reward.offline import fidelity

    with RewardClient(args.url) as client:
        bank = client.fewshot()
    examples = [Example.model_validate(e, strict=False) for e in bank["examples"]]
    result = fidelity.fit_weights(args.url, Path(args.out), examples)
    print(json.dumps(result, indent=1, default=str))
    print(f"recipe: {args.out}")
    return 0


def _catalog_backend(args: argparse.Namespace) -> Any:
    from eqs_reward.catalog import open_catalog

    overrides = {}
    if args.backend:
        overrides["catalog_backend"] = args.backend
    if args.postgres_url:
        overrides["catalog_postgres_url"] = args.postgres_url
    settings = _settings(**overrides)
    if settings.catalog_backend == "none":
        raise ValueError("EQS_REWARD_CATALOG_BACKEND=none: no catalog to load into")
    return open_catalog(settings.catalog_backend, settings.data_dir, settings.catalog_postgres_url)


def cmd_catalog_load(args: argparse.Namespace) -> int:
    """Read and check the whole file first: one bad row loads nothing."""
    from eqs_reward import _resources
    from eqs_reward.catalog import CatalogError, read_products

    if args.demo == (args.file is not None):
        raise ValueError("give a FILE or --demo (the project's demo catalog), not both")
    path = _resources.demo_dir() / "catalog.jsonl" if args.demo else Path(args.file)
    try:
        products = read_products(path)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = _catalog_backend(args)

    async def load() -> Any:
        try:
            return await backend.load(products)
        finally:
            await backend.close()

    info = asyncio.run(load())
    print(
        f"catalog version {info.version} loaded into {backend.name}: {info.count} products "
        f"(digest {info.digest}); running services pick it up within 5 s"
    )
    return 0


def cmd_catalog_show(args: argparse.Namespace) -> int:
    backend = _catalog_backend(args)

    async def show() -> Any:
        try:
            return await backend.active()
        finally:
            await backend.close()

    info = asyncio.run(show())
    if info is None:
        print("no catalog loaded (eqs-reward catalog load FILE)")
        return 1
    print(json.dumps({"backend": backend.name, **info.to_dict()}, indent=2))
    return 0


def cmd_clicks_fit(args: argparse.Namespace) -> int:
    require("server", "clicks fit")
    from eqs_reward import _resources
    from eqs_reward.clicks import ClickLogError, ClickStore, fit_click_model, read_impressions

    if args.demo == (args.logs is not None):
        raise ValueError("give LOGS.jsonl or --demo (the project's demo logs), not both")
    path = _resources.demo_dir() / "clicks.jsonl" if args.demo else Path(args.logs)
    try:
        model = fit_click_model(read_impressions(path), min_clicks=args.min_clicks)
    except ClickLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = model.report
    print(
        f"{report['impressions']} impressions, {report['clicks']} clicks; held-out contexts: "
        f"{report['held_out_impressions']} impressions, ROC AUC {report['held_out_roc_auc']:.3f}, "
        f"Brier {report['held_out_brier']:.3f}"
    )
    print("calibration (held out): predicted -> observed click rate")
    for row in report["calibration"]:
        print(f"  {row['predicted']:.3f} -> {row['observed']:.3f}")
    if args.dry_run:
        print("dry run: nothing stored")
        return 0
    settings = _settings()
    path = ClickStore(settings.data_dir / "clicks").save(model)
    print(f"stored as click model version {model.version}: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from eqs_reward.offline.demo import write_demo

    catalog, clicks = write_demo(Path(args.out))
    print(f"wrote {catalog} and {clicks} (synthetic demo data made by this project)")
    return 0


def cmd_heads_report(args: argparse.Namespace) -> int:
    require("server", "heads-report")
    from eqs_reward.offline import heads_report
    from eqs_reward.server.heads import OpenAIEmbedder, WordLlamaEmbedder

    embedder: Any = (
        OpenAIEmbedder(args.embeddings_url, args.embeddings_model)
        if args.embeddings_url
        else WordLlamaEmbedder()
    )
    cases = Path(args.cases) if args.cases else None
    report = asyncio.run(
        heads_report.measure_exclusivity(
            embedder, queries=args.queries, seed=args.seed, cases_path=cases
        )
    )
    heads_report.write_report(report, Path(args.out))
    print(heads_report.render_markdown(report))
    print(f"report: {Path(args.out) / 'exclusivity.json'}")
    return 0


def cmd_redteam(args: argparse.Namespace) -> int:
    from eqs_reward.offline import redteam

    if args.write_corpus:
        count = redteam.write_corpus(Path(args.write_corpus))
        print(f"wrote {count} attacks to {args.write_corpus}")
        return 0
    require("eval", "redteam")
    report = redteam.run(
        redteam.RedteamOptions(
            url=args.url,
            out=Path(args.out),
            score_mode=args.mode,
            fewshot_version=args.fewshot_version,
            legit=args.legit,
        )
    )
    print(redteam.table(report))
    print(f"\nreport: {Path(args.out) / 'redteam.json'}  plot: {Path(args.out) / 'redteam.png'}")
    return 0


# -- training and mining ------------------------------------------------------------------------
def _train_options(args: argparse.Namespace) -> Any:
    from eqs_reward.offline.train import TrainOptions

    return TrainOptions(
        url=args.url,
        out=Path(args.out),
        steps=args.steps,
        batch_size=args.batch_size,
        group_size=args.group_size,
        learning_rate=args.lr,
        beta=args.beta,
        max_completion_length=args.max_completion_length,
        prompts=args.prompts,
        extra_contexts=Path(args.extra_contexts) if args.extra_contexts else None,
        model=Path(args.model) if args.model else None,
        fewshot_version=args.fewshot_version,
        score_mode=args.mode,
        seed=args.seed,
        save_model=args.save_model,
        recipe=args.recipe,
    )


def _mine_options(args: argparse.Namespace, out: str) -> Any:
    from eqs_reward.offline.train import MineOptions

    return MineOptions(
        url=args.url,
        out=Path(out),
        contexts=Path(args.contexts) if args.contexts else None,
        candidates=Path(args.candidates) if getattr(args, "candidates", None) else None,
        model=Path(args.model) if args.model else None,
        k=args.k,
        limit=args.limit,
        top=args.top,
        threshold=args.threshold,
        score_mode=args.mode,
        fewshot_version=args.fewshot_version,
        seed=args.seed,
    )


def cmd_train(args: argparse.Namespace) -> int:
    require("train", "train")
    from eqs_reward.offline.train import train

    _configure_logging("info")
    print(json.dumps(train(_train_options(args)), indent=2))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    if not args.candidates:
        require("train", "mine", hint=" (or pass --candidates to score given suggestions)")
    from eqs_reward.offline.train import mine

    _configure_logging("info")
    print(json.dumps(mine(_mine_options(args, args.out)), indent=2))
    return 0


def _warm_options(args: argparse.Namespace, out: str) -> Any:
    from eqs_reward.offline.warmstart import WarmStartOptions

    return WarmStartOptions(
        url=args.url,
        out=Path(out),
        model=Path(args.model) if args.model else None,
        queries=args.warm_queries,
        epochs=args.warm_epochs,
        learning_rate=args.warm_lr,
        samples=args.warm_samples,
        threshold=args.threshold_sft,
        clicks=Path(args.clicks) if args.clicks else None,
        pairs=Path(args.pairs) if args.pairs else None,
        min_pairs=args.warm_min_pairs,
        fewshot_version=args.fewshot_version,
        score_mode=args.mode,
        seed=args.seed,
    )


def cmd_warmstart(args: argparse.Namespace) -> int:
    require("train", "warmstart")
    from eqs_reward.offline.warmstart import warm_start

    _configure_logging("info")
    summary = warm_start(_warm_options(args, args.out))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    require("train", "iterate")
    from eqs_reward.offline.algorithm1 import iterate

    _configure_logging("info")
    report = iterate(
        args.rounds,
        _train_options(args),
        _mine_options(args, args.out),
        None if args.no_warm_start else _warm_options(args, args.out),
        held_out=args.held_out,
        eval_samples=args.eval_samples,
        command="eqs-reward " + " ".join(sys.argv[1:]),
    )
    print(Path(args.out) / "stages.md")
    print(json.dumps(report["stages"], indent=2))
    return 0


def _add_warm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warm-epochs", type=float, default=5.0, help="SFT epochs over the pairs")
    parser.add_argument("--warm-lr", type=float, default=2e-4, help="SFT learning rate")
    parser.add_argument(
        "--warm-queries", type=int, default=40, help="training queries to build SFT pairs for"
    )
    parser.add_argument(
        "--warm-samples", type=int, default=4, help="answers sampled per query for SFT pairs"
    )
    parser.add_argument(
        "--threshold-sft",
        type=float,
        default=0.5,
        help="keep sampled suggestions whose reward is at least this",
    )
    parser.add_argument(
        "--clicks", default=None, help="click logs JSONL: SFT on what shoppers tapped instead"
    )
    parser.add_argument(
        "--pairs", default=None, help="SFT on this pairs.jsonl (e.g. an earlier warm start's)"
    )
    parser.add_argument(
        "--warm-min-pairs", type=int, default=8, help="stop when fewer SFT pairs than this"
    )


def _add_train_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help="eqs-reward service")
    parser.add_argument("--out", default=default_out, help="output folder")
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="completions per step (2 prompts x G)"
    )
    parser.add_argument("--group-size", type=int, default=4, help="GRPO G (num_generations)")
    parser.add_argument(
        "--lr",
        type=float,
        default=2e-5,
        help="learning rate: 2e-5 moves a 135M policy in 20 CPU steps (paper, GPU: 1e-6)",
    )
    parser.add_argument("--beta", type=float, default=0.001, help="KL coefficient (paper: 0.001)")
    parser.add_argument(
        "--max-completion-length",
        type=int,
        default=80,
        help="tokens per completion: a warm-started answer takes 45-70",
    )
    parser.add_argument("--prompts", type=int, default=64, help="shopper queries to train on")
    parser.add_argument("--extra-contexts", default=None, help="JSONL, e.g. a hard subset")
    parser.add_argument("--model", default=None, help="policy folder (default: SmolLM2-135M)")
    parser.add_argument(
        "--fewshot-version",
        type=int,
        default=None,
        help="pin this bank version (default: the active one, pinned)",
    )
    parser.add_argument("--mode", choices=["binary", "soft"], default="soft")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save-model", action="store_true")
    parser.add_argument(
        "--recipe",
        default=None,
        help="reward recipe (GET /v1/recipes); pinned for the run, default: the server's",
    )


def _add_mine_arguments(parser: argparse.ArgumentParser, with_url: bool) -> None:
    if with_url:
        parser.add_argument("--url", default=DEFAULT_URL)
        parser.add_argument("--model", default=None, help="policy folder (default: SmolLM2)")
        parser.add_argument("--fewshot-version", type=int, default=None)
        parser.add_argument("--mode", choices=["binary", "soft"], default="soft")
        parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--contexts", default=None, help="JSONL contexts (default: shopper data)")
    parser.add_argument("--k", type=int, default=6, help="candidate suggestions per context")
    parser.add_argument("--limit", type=int, default=32, help="contexts to mine")
    parser.add_argument("--top", type=int, default=8, help="keep the N most disputed")
    parser.add_argument("--threshold", type=float, default=None, help="or every u_q >= this")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqs-reward", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"eqs-reward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the reward API [server; embedded]")
    serve.add_argument("--host", default=None, help="bind address (EQS_REWARD_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (EQS_REWARD_PORT)")
    serve.set_defaults(func=cmd_serve)

    judge = sub.add_parser("judge", help="run only the embedded vLLM judge [embedded]")
    judge.add_argument("--port", type=int, default=None, help="EQS_REWARD_EMBEDDED_PORT")
    judge.set_defaults(func=cmd_judge)

    score = sub.add_parser("score", help="score a JSONL file against a running service")
    score.add_argument("file", help="JSONL: {context, suggestions|completion|suggestion, id?}")
    score.add_argument("--url", default=DEFAULT_URL, help="service base URL")
    score.add_argument("--mode", choices=["binary", "soft"], default="binary")
    score.add_argument("--k", type=int, default=None, help="expected suggestions per item")
    score.add_argument("--fewshot-version", type=int, default=None)
    score.add_argument("--recipe", default=None, help="reward recipe (default: the server's)")
    score.add_argument("--batch", type=int, default=64, help="items per request")
    score.add_argument("--timeout", type=float, default=300.0)
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    score.set_defaults(func=cmd_score)

    train = sub.add_parser("train", help="GRPO (TRL) on SmolLM2-135M with rewards [train]")
    _add_train_arguments(train, "runs/train")
    train.set_defaults(func=cmd_train)

    mine = sub.add_parser("mine", help="rank contexts by group disagreement u_q [train]")
    mine.add_argument("--out", default="runs/mine")
    mine.add_argument(
        "--candidates",
        default=None,
        help='JSONL {"context"|"query", "suggestions": [...]} instead of generating',
    )
    _add_mine_arguments(mine, with_url=True)
    mine.set_defaults(func=cmd_mine)

    warm = sub.add_parser("warmstart", help="warm-start SFT on well-formed answers [train]")
    _add_train_arguments(warm, "runs/warmstart")
    _add_warm_arguments(warm)
    warm.set_defaults(func=cmd_warmstart)

    iterate = sub.add_parser(
        "iterate",
        help="Algorithm 1: warm start, GRPO, mine, K rounds, metrics per stage [train]",
    )
    iterate.add_argument("--rounds", type=int, default=2)
    iterate.add_argument("--no-warm-start", action="store_true", help="start GRPO from the base")
    iterate.add_argument(
        "--held-out", type=int, default=48, help="held-out real queries per evaluation"
    )
    iterate.add_argument(
        "--eval-samples", type=int, default=2, help="answers sampled per held-out query"
    )
    _add_train_arguments(iterate, "runs/iterate")
    _add_mine_arguments(iterate, with_url=False)
    _add_warm_arguments(iterate)
    iterate.set_defaults(func=cmd_iterate)

    evaluate = sub.add_parser("eval", help="judge agreement on labeled cases, or paper metrics")
    evaluate.add_argument("--url", default=DEFAULT_URL)
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--cases", default=None, help="labeled cases JSONL (e.g. judge_cases/dev.jsonl)"
    )
    source.add_argument(
        "--suggestions",
        default=None,
        help='policy outputs JSONL {"context"|"query", "suggestions": [...]}: '
        "Strict Accuracy, Valid Rate, pass rates",
    )
    evaluate.add_argument("--mode", choices=["binary", "soft"], default="soft")
    evaluate.add_argument("--fewshot-version", type=int, default=None)
    evaluate.add_argument("--repeats", type=int, default=1, help="runs; reports mean and spread")
    evaluate.add_argument(
        "--recipe",
        action="append",
        default=None,
        help="recipe to score with (GET /v1/recipes); with --suggestions repeat it to compare "
        "recipes; default: the server's",
    )
    evaluate.add_argument("--out", default="runs/eval")
    evaluate.set_defaults(func=cmd_eval)

    red = sub.add_parser("redteam", help="how much reward attacks win, per family [eval]")
    red.add_argument("--url", default=DEFAULT_URL)
    red.add_argument("--mode", choices=["binary", "soft"], default="soft")
    red.add_argument("--fewshot-version", type=int, default=None)
    red.add_argument("--legit", type=int, default=200, help="legitimate suggestions to score")
    red.add_argument("--out", default="runs/redteam")
    red.add_argument(
        "--write-corpus", default=None, help="only write the attacks as JSONL to this file"
    )
    red.set_defaults(func=cmd_redteam)

    heads = sub.add_parser(
        "heads-report", help="measure the exclusivity head on real queries; choose its ramp"
    )
    heads.add_argument("--queries", type=int, default=300)
    heads.add_argument("--seed", type=int, default=5)
    heads.add_argument(
        "--cases", default=None, help="labeled cases JSONL: novelty vs information gain"
    )
    heads.add_argument("--embeddings-url", default=None, help="an OpenAI-compatible …/v1")
    heads.add_argument("--embeddings-model", default="")
    heads.add_argument("--out", default="runs/heads")
    heads.set_defaults(func=cmd_heads_report)

    calibrate = sub.add_parser("calibrate", help="fit and store pass thresholds for a version")
    calibrate.add_argument("--url", default=DEFAULT_URL)
    calibrate.add_argument("--cases", required=True, help="labeled cases JSONL")
    calibrate.add_argument("--fewshot-version", type=int, default=None)
    calibrate.set_defaults(func=cmd_calibrate)

    catalog = sub.add_parser("catalog", help="the shop's catalog for the retrieval head [server]")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    for name, func, text in (
        ("load", cmd_catalog_load, "load products (JSONL, CSV or Parquet) as a new version"),
        ("show", cmd_catalog_show, "the catalog being served"),
    ):
        command = catalog_sub.add_parser(name, help=text)
        if name == "load":
            command.add_argument("file", nargs="?", default=None, help="products file")
            command.add_argument("--demo", action="store_true", help="the project's demo catalog")
        command.add_argument(
            "--backend", choices=["sqlite", "postgres"], default=None, help="default: settings"
        )
        command.add_argument("--postgres-url", default=None, help="EQS_REWARD_CATALOG_POSTGRES_URL")
        command.set_defaults(func=func)

    clicks = sub.add_parser("clicks", help="the click model head [server]")
    clicks_sub = clicks.add_subparsers(dest="clicks_command", required=True)
    fit = clicks_sub.add_parser("fit", help="fit a click model on impression logs; store it")
    fit.add_argument("logs", nargs="?", default=None, help="JSONL impressions")
    fit.add_argument("--demo", action="store_true", help="the project's demo logs")
    fit.add_argument("--min-clicks", type=int, default=100)
    fit.add_argument("--dry-run", action="store_true", help="report only, store nothing")
    fit.set_defaults(func=cmd_clicks_fit)

    demo = sub.add_parser("demo", help="write the demo catalog and click logs")
    demo.add_argument("--out", default="demo")
    demo.set_defaults(func=cmd_demo)

    fidelity = sub.add_parser("fidelity", help="the reward's fidelity on held-out labels [server]")
    fidelity_sub = fidelity.add_subparsers(dest="fidelity_command", required=True)
    report = fidelity_sub.add_parser(
        "report", help="measure recipes on the validation split; check the floors"
    )
    report.add_argument("--url", default=DEFAULT_URL)
    report.add_argument(
        "--recipe", action="append", default=None, help="repeatable; default: the server's default"
    )
    report.add_argument(
        "--mode", action="append", choices=["binary", "soft"], default=None, help="default: soft"
    )
    report.add_argument(
        "--split",
        action="append",
        choices=["validation", "dev"],
        default=None,
        help="default: both",
    )
    report.add_argument(
        "--prompts-dir", default=None, help="the service's EQS_REWARD_PROMPTS_DIR, if it has one"
    )
    report.add_argument("--floors", default=None, help="floors JSON: exit 1 when one is missed")
    report.add_argument("--out", default=None, help="folder for report.md and report.json")
    report.add_argument("--readme", default=None, help="quote the table in this README")
    report.set_defaults(func=cmd_fidelity_report)
    fit_weights = fidelity_sub.add_parser(
        "fit", help="fit the taught recipe's weights for the service's judge; write the recipe"
    )
    fit_weights.add_argument("--url", default=DEFAULT_URL)
    fit_weights.add_argument("--out", default="prompts/recipes/qualeqs-taught.toml")
    fit_weights.set_defaults(func=cmd_fidelity_fit)

    bank = sub.add_parser("bank", help="the versioned few-shot bank")
    bank_sub = bank.add_subparsers(dest="bank_command", required=True)
    export = bank_sub.add_parser("export", help="write a version's examples as JSONL [server]")
    export.add_argument("--version", type=int, default=None, help="default: the active one")
    export.add_argument("--out", default=None, help="file (default: stdout)")
    export.set_defaults(func=cmd_bank_export)
    imp = bank_sub.add_parser("import", help="add a JSONL file's examples as a version [server]")
    imp.add_argument("file")
    imp.add_argument("--note", default="")
    imp.set_defaults(func=cmd_bank_import)
    add = bank_sub.add_parser("add", help="add examples through a running service's API")
    add.add_argument("file", help="JSONL of examples")
    add.add_argument("--url", default=DEFAULT_URL)
    add.add_argument("--note", default="")
    add.add_argument("--expected-version", type=int, default=None)
    add.add_argument("--force", action="store_true", help="past the agreement gate (recorded)")
    add.set_defaults(func=cmd_bank_add)
    check = bank_sub.add_parser("check", help="dry run: would these examples judge better?")
    check.add_argument("--add", required=True, help="JSONL of candidate examples")
    check.add_argument("--cases", required=True, help="labeled cases JSONL")
    check.add_argument("--url", default=DEFAULT_URL)
    check.add_argument("--mode", choices=["binary", "soft"], default="soft")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_bank_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return int(args.func(args))
        return 130
    except RewardServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (JsonlError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
