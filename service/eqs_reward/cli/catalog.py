"""eqs-reward catalog and clicks: the data of the retrieval and click-model heads."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from eqs_reward.cli._common import (
    require,
    settings_with,
)


def _catalog_backend(args: argparse.Namespace) -> Any:
    from eqs_reward.catalog import open_catalog

    overrides = {}
    if args.backend:
        overrides["catalog_backend"] = args.backend
    if args.postgres_url:
        overrides["catalog_postgres_url"] = args.postgres_url
    settings = settings_with(**overrides)
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
    settings = settings_with()
    path = ClickStore(settings.data_dir / "clicks").save(model)
    print(f"stored as click model version {model.version}: {path}")
    return 0
