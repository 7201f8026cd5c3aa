"""``eqs-reward``: serve the reward service, run only the embedded judge, or score a file.

eqs-reward serve [--host H] [--port P]   serve /v1/score (starts the embedded judge when
                                          EQS_REWARD_JUDGE_URL is unset)
eqs-reward judge [--port P]              run only the embedded vLLM judge
eqs-reward score FILE.jsonl [--url U]    score a JSONL file against a running service
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from service import __version__
from service.settings import Settings

log = logging.getLogger("eqs_reward.cli")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per judge call drowns the log at training rates; failures are logged by us.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = Settings(**overrides)
    _configure_logging(settings.log_level)
    if settings.embedded:
        log.info(
            "no EQS_REWARD_JUDGE_URL: starting the embedded judge (vLLM CPU, SmolLM2-135M) on "
            "port %d; /v1/score answers 503 until it is ready (about a minute)",
            settings.embedded_port,
        )
    app = create_app(settings)
    # One worker process per container: scale with replicas (metrics stay single-process).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from service.embedded import EmbeddedJudge

    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["embedded_port"] = args.port
    settings = Settings(**overrides)
    _configure_logging(settings.log_level)

    async def run() -> None:
        judge = EmbeddedJudge.from_settings(settings)
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


def _read_items(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
            if "context" not in row:
                raise SystemExit(f"{path}:{number}: needs 'context' and 'suggestions'/'completion'")
            item = {
                key: row[key]
                for key in ("id", "context", "suggestions", "completion")
                if key in row
            }
            if "suggestion" in row and "suggestions" not in item:  # a judge_cases row
                item["suggestions"] = [row["suggestion"]]
            yield item


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.3f}"


def cmd_score(args: argparse.Namespace) -> int:
    items = list(_read_items(Path(args.file)))
    if not items:
        print("no items in the file", file=sys.stderr)
        return 1
    options = {"k": args.k, "score_mode": args.mode, "on_failure": "null"}
    if args.fewshot_version is not None:
        options["fewshot_version"] = args.fewshot_version
    results: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        for start in range(0, len(items), args.batch):
            batch = items[start : start + args.batch]
            response = client.post("/v1/score", json={"items": batch, "options": options})
            if _failed(response):
                return 2
            body = response.json()
            results.extend(body["results"])
            meta = body["meta"]
    if args.json:
        print(json.dumps({"results": results, "meta": meta}, ensure_ascii=False, indent=2))
        return 0
    print(
        f"judge {meta['judge_model']}  prompt {meta['prompt_version']}  "
        f"few-shot v{meta['fewshot_version']}  mode {meta['score_mode']}"
    )
    header = f"{'item':<10} {'sugg':<48} {'ans':>5} {'fac':>5} {'gain':>5} {'r(s)':>5}  status"
    print(header)
    print("-" * len(header))
    for index, (item, result) in enumerate(zip(items, results, strict=True)):
        label = str(result.get("id") or item.get("id") or index)[:10]
        for suggestion in result["suggestions"]:
            text = suggestion["text"].replace("\n", " ")
            text = text if len(text) <= 46 else text[:45] + "…"
            status = suggestion["status"]
            if suggestion.get("reason"):
                status += f" ({suggestion['reason']})"
            print(
                f"{label:<10} {text:<48} {_fmt(suggestion['answerability'])} "
                f"{_fmt(suggestion['factuality'])} {_fmt(suggestion['information_gain'])} "
                f"{_fmt(suggestion['reward'])}  {status}"
            )
            label = ""
        print(
            f"{'':<10} {'set: r_f=' + _fmt(result['format_reward']).strip():<48} "
            f"{'':>5} {'':>5} {'u_q':>5} {_fmt(result['disagreement'])}  "
            f"r_q={_fmt(result['reward']).strip()} {result['status']}"
        )
    return 0


async def _with_store(settings: Settings, action: Any) -> Any:
    import redis.asyncio

    from service.bank import open_store
    from service.fewshot import load_seed_examples

    client = redis.asyncio.Redis.from_url(settings.redis_url) if settings.redis_url else None
    store = open_store(settings, client)
    try:
        await store.init(load_seed_examples(settings.fewshot_dir))
        return await action(store)
    finally:
        await store.close()
        if client is not None:
            await client.aclose()


def _admin_token() -> str | None:
    token = Settings().admin_token
    if not token:
        print("set EQS_REWARD_ADMIN_TOKEN to the service's admin token", file=sys.stderr)
    return token


def _failed(response: httpx.Response) -> bool:
    """Print the service's error envelope for a non-2xx answer; True if it was one."""
    if response.status_code < 300:
        return False
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    print(f"error {response.status_code}: {message}", file=sys.stderr)
    return True


def cmd_bank_export(args: argparse.Namespace) -> int:
    settings = Settings()

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
    from service.bank import read_examples_jsonl

    settings = Settings()
    examples = read_examples_jsonl(Path(args.file))

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
    from service.bank import read_examples_jsonl

    token = _admin_token()
    if not token:
        return 2
    examples = [e.model_dump(mode="json") for e in read_examples_jsonl(Path(args.file))]
    body: dict[str, Any] = {"examples": examples, "note": args.note}
    if args.expected_version is not None:
        body["expected_version"] = args.expected_version
    response = httpx.post(
        args.url.rstrip("/") + "/v1/fewshot",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    )
    if _failed(response):
        return 2
    data = response.json()
    print(f"version {data['version']}: added {data['added']}, already present {data['duplicates']}")
    return 0


DEV_CASES = Path(__file__).resolve().parent.parent.parent / "shared" / "judge_cases" / "dev.jsonl"


def cmd_eval(args: argparse.Namespace) -> int:
    from service import eval_report

    out = Path(args.out)
    if args.suggestions:
        report = eval_report.run_suggestions(
            args.url, Path(args.suggestions), args.mode, args.fewshot_version
        )
        eval_report.print_paper_table(report)
        path = eval_report.write(report, out, "paper_metrics")
        print(f"\nreport: {path}")
        return 0
    cases = Path(args.cases) if args.cases else DEV_CASES
    report = eval_report.run_cases(args.url, cases, args.mode, args.fewshot_version, args.repeats)
    eval_report.print_cases_table(report)
    path = eval_report.write(report, out, "report")
    eval_report.plot_cases(report, out / "report.png")
    print(f"\nreport: {path}  plot: {out / 'report.png'}")
    return 0


def cmd_bank_check(args: argparse.Namespace) -> int:
    from service.bank import read_examples_jsonl
    from service.eval_report import read_jsonl

    token = _admin_token()
    if not token:
        return 2
    examples = [e.model_dump(mode="json") for e in read_examples_jsonl(Path(args.add))]
    cases = read_jsonl(Path(args.cases)) if args.cases else read_jsonl(DEV_CASES)
    response = httpx.post(
        args.url.rstrip("/") + "/v1/fewshot",
        timeout=600,
        headers={"Authorization": f"Bearer {token}"},
        json={"examples": examples, "dry_run": True, "cases": cases, "score_mode": args.mode},
    )
    if _failed(response):
        return 2
    report = response.json()
    print(
        f"candidate (active v{report['active']['version']} + {len(examples)} examples) on "
        f"{report['cases']} labeled cases, {report['score_mode']} scores: "
        f"{report['verdict'].upper()}"
    )
    print(f"{'':<18} {'agreement':>22} {'AUC':>22}")
    for d in ("answerability", "factuality", "information_gain"):
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


def _pair(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return f"{'-':>22}"
    return f"{before:6.3f} -> {after:6.3f} ({after - before:+.3f})"


def cmd_calibrate(args: argparse.Namespace) -> int:
    from service.eval_report import read_jsonl

    token = _admin_token()
    if not token:
        return 2
    cases = read_jsonl(Path(args.cases)) if args.cases else read_jsonl(DEV_CASES)
    body: dict[str, Any] = {"cases": cases}
    if args.fewshot_version is not None:
        body["version"] = args.fewshot_version
    response = httpx.put(
        args.url.rstrip("/") + "/v1/fewshot/calibration",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    if _failed(response):
        return 2
    fitted = response.json()
    print(f"few-shot v{fitted['version']}: thresholds fitted on {fitted['cases']} cases")
    for d, t in fitted["thresholds"].items():
        print(
            f"  {d:<18} pass if score >= {t:.4f}   agreement "
            f"{fitted['agreement_at_0_5'][d]:.3f} -> {fitted['agreement_fitted'][d]:.3f}"
        )
    return 0


def _train_options(args: argparse.Namespace) -> Any:
    from service.train import TrainOptions

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
    )


def _mine_options(args: argparse.Namespace, out: str) -> Any:
    from service.train import MineOptions

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
    from service.train import train

    _configure_logging("info")
    summary = train(_train_options(args))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from service.train import mine

    _configure_logging("info")
    summary = mine(_mine_options(args, args.out))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    from service.train import iterate

    _configure_logging("info")
    history = iterate(args.rounds, _train_options(args), _mine_options(args, args.out))
    print(json.dumps(history, indent=2))
    return 0


def _add_train_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="eqs-reward service")
    parser.add_argument("--out", default=default_out, help="output folder")
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps")
    parser.add_argument("--batch-size", type=int, default=4, help="completions per step")
    parser.add_argument("--group-size", type=int, default=4, help="GRPO G (num_generations)")
    parser.add_argument("--lr", type=float, default=1e-6, help="learning rate (paper: 1e-6)")
    parser.add_argument("--beta", type=float, default=0.001, help="KL coefficient (paper: 0.001)")
    parser.add_argument("--max-completion-length", type=int, default=64)
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


def _add_mine_arguments(parser: argparse.ArgumentParser, with_url: bool) -> None:
    if with_url:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
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

    serve = sub.add_parser("serve", help="serve the reward API")
    serve.add_argument("--host", default=None, help="bind address (EQS_REWARD_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (EQS_REWARD_PORT)")
    serve.set_defaults(func=cmd_serve)

    judge = sub.add_parser("judge", help="run only the embedded vLLM judge")
    judge.add_argument("--port", type=int, default=None, help="EQS_REWARD_EMBEDDED_PORT")
    judge.set_defaults(func=cmd_judge)

    score = sub.add_parser("score", help="score a JSONL file against a running service")
    score.add_argument("file", help="JSONL: {context, suggestions|completion|suggestion, id?}")
    score.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    score.add_argument("--mode", choices=["binary", "soft"], default="binary")
    score.add_argument("--k", type=int, default=None, help="expected suggestions per item")
    score.add_argument("--fewshot-version", type=int, default=None)
    score.add_argument("--batch", type=int, default=64, help="items per request")
    score.add_argument("--timeout", type=float, default=300.0)
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    score.set_defaults(func=cmd_score)

    train = sub.add_parser("train", help="GRPO (TRL) on SmolLM2-135M with rewards from a service")
    _add_train_arguments(train, "runs/train")
    train.set_defaults(func=cmd_train)

    mine = sub.add_parser("mine", help="rank contexts by group disagreement u_q")
    mine.add_argument("--out", default="runs/mine")
    mine.add_argument(
        "--candidates",
        default=None,
        help='JSONL {"context"|"query", "suggestions": [...]} instead of generating',
    )
    _add_mine_arguments(mine, with_url=True)
    mine.set_defaults(func=cmd_mine)

    iterate = sub.add_parser("iterate", help="alternate training and mining for K rounds")
    iterate.add_argument("--rounds", type=int, default=2)
    _add_train_arguments(iterate, "runs/iterate")
    _add_mine_arguments(iterate, with_url=False)
    iterate.set_defaults(func=cmd_iterate)

    evaluate = sub.add_parser("eval", help="judge agreement on labeled cases, or paper metrics")
    evaluate.add_argument("--url", default="http://127.0.0.1:8000")
    evaluate.add_argument(
        "--cases",
        default=None,
        help="labeled cases JSONL (default: ../shared/judge_cases/dev.jsonl)",
    )
    evaluate.add_argument(
        "--suggestions",
        default=None,
        help='policy outputs JSONL {"context"|"query", "suggestions": [...]}: '
        "Strict Accuracy, Valid Rate, pass rates",
    )
    evaluate.add_argument("--mode", choices=["binary", "soft"], default="soft")
    evaluate.add_argument("--fewshot-version", type=int, default=None)
    evaluate.add_argument("--repeats", type=int, default=1, help="runs; reports mean and spread")
    evaluate.add_argument("--out", default="runs/eval")
    evaluate.set_defaults(func=cmd_eval)

    calibrate = sub.add_parser("calibrate", help="fit and store pass thresholds for a version")
    calibrate.add_argument("--url", default="http://127.0.0.1:8000")
    calibrate.add_argument("--cases", default=None, help="labeled cases JSONL")
    calibrate.add_argument("--fewshot-version", type=int, default=None)
    calibrate.set_defaults(func=cmd_calibrate)

    bank = sub.add_parser("bank", help="the versioned few-shot bank")
    bank_sub = bank.add_subparsers(dest="bank_command", required=True)
    export = bank_sub.add_parser("export", help="write a version's examples as JSONL")
    export.add_argument("--version", type=int, default=None, help="default: the active one")
    export.add_argument("--out", default=None, help="file (default: stdout)")
    export.set_defaults(func=cmd_bank_export)
    imp = bank_sub.add_parser("import", help="add a JSONL file's examples as a new version")
    imp.add_argument("file")
    imp.add_argument("--note", default="")
    imp.set_defaults(func=cmd_bank_import)
    add = bank_sub.add_parser("add", help="add examples through a running service's API")
    add.add_argument("file", help="JSONL of examples")
    add.add_argument("--url", default="http://127.0.0.1:8000")
    add.add_argument("--note", default="")
    add.add_argument("--expected-version", type=int, default=None)
    add.set_defaults(func=cmd_bank_add)
    check = bank_sub.add_parser("check", help="dry run: would these examples judge better?")
    check.add_argument("--add", required=True, help="JSONL of candidate examples")
    check.add_argument("--cases", default=None, help="labeled cases (default: dev.jsonl)")
    check.add_argument("--url", default="http://127.0.0.1:8000")
    check.add_argument("--mode", choices=["binary", "soft"], default="soft")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_bank_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
