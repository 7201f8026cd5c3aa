"""``/v1/fewshot``: read the versioned bank; add and retire examples (admin token)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.bank import BankStore, ExampleNotFoundError, StaleVersionError
from service.errors import (
    ConflictError,
    ForbiddenError,
    GateRefusedError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from service.evaluation import DIMENSIONS
from service.fewshot import BankVersion, ExampleIn, VersionNotFoundError, make_example
from service.gating import LabeledCase, calibrate, candidate_version, compare
from service.schemas import ErrorBody
from service.settings import Settings

router = APIRouter(prefix="/v1/fewshot", tags=["few-shot bank"])

ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no admin token"},
    403: {"model": ErrorBody, "description": "wrong admin token, or writes disabled"},
    409: {"model": ErrorBody, "description": "expected_version is stale"},
    422: {"model": ErrorBody, "description": "invalid examples"},
}


class AddExamples(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: list[ExampleIn] = Field(min_length=1)
    note: str = Field(default="", max_length=500)
    expected_version: int | None = Field(default=None, ge=0)
    dry_run: bool = Field(
        default=False, description="evaluate the candidate version on labeled cases; store nothing"
    )
    cases: list[LabeledCase] | None = Field(
        default=None,
        max_length=500,
        description="labeled cases for the comparison (else the configured gate cases)",
    )
    score_mode: Literal["binary", "soft"] = "soft"
    force: bool = Field(default=False, description="add even if the gate refuses (recorded)")


class Calibrate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1, description="default: the active version")
    cases: list[LabeledCase] = Field(min_length=2, max_length=2000)


class RetireExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=500)
    expected_version: int | None = Field(default=None, ge=0)


async def get_store(request: Request) -> BankStore:
    store: BankStore = request.app.state.bank
    return store


async def require_admin(request: Request) -> None:
    """Bearer admin token, compared in constant time. None -> 401, wrong -> 403."""
    settings: Settings = request.app.state.settings
    if not settings.admin_token:
        raise ForbiddenError(
            "few-shot writes are disabled: set EQS_REWARD_ADMIN_TOKEN on the service to enable "
            "them, then send 'Authorization: Bearer <token>'"
        )
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "few-shot writes need 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
        raise ForbiddenError("the admin token is not valid")


def version_body(version: BankVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "created_at": version.created_at.isoformat(),
        "note": version.note,
        "example_count": len(version.examples),
        "examples": [e.model_dump(mode="json") for e in version.examples],
    }


async def _read(store: BankStore, version: int | None) -> BankVersion:
    try:
        return await (store.active() if version is None else store.get(version))
    except VersionNotFoundError as exc:
        raise NotFoundError(f"{exc}; GET /v1/fewshot/versions lists them") from exc


@router.get("")
async def list_examples(
    version: int | None = None,
    store: BankStore = Depends(get_store),  # noqa: B008
) -> dict[str, Any]:
    """The active version and its examples, in prompt order (``?version=N`` for another)."""
    return version_body(await _read(store, version))


@router.get("/versions")
async def list_versions(store: BankStore = Depends(get_store)) -> dict[str, Any]:  # noqa: B008
    """Every version with its creation time, note and example count; the last is active."""
    versions = await store.versions()
    return {
        "active": versions[-1].version if versions else None,
        "versions": [
            {
                "version": v.version,
                "created_at": v.created_at.isoformat(),
                "note": v.note,
                "example_count": v.example_count,
            }
            for v in versions
        ],
    }


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses={
        200: {"description": "every example was already present: nothing changed"},
        **ADMIN_ERRORS,
    },
)
async def add_examples(
    body: AddExamples,
    request: Request,
    store: BankStore = Depends(get_store),  # noqa: B008
) -> JSONResponse:
    """Add examples as a new version (201). Examples already in the active version are not
    added twice: if nothing is new, 200 with the unchanged version (safe to retry)."""
    settings: Settings = request.app.state.settings
    if len(body.examples) > settings.fewshot_max_examples_per_add:
        raise InvalidRequestError(
            f"examples: {len(body.examples)} examples, over the limit of "
            f"{settings.fewshot_max_examples_per_add} per request"
        )
    gate_on = settings.fewshot_gate_tolerance is not None
    note = body.note
    if body.dry_run or gate_on:
        cases = body.cases or _gate_cases(settings)
        if not cases:
            raise InvalidRequestError(
                "cases: a dry run needs labeled cases (send 'cases' or configure "
                "EQS_REWARD_FEWSHOT_GATE_CASES)"
            )
        active = await store.active()
        if body.expected_version is not None and body.expected_version != active.version:
            raise ConflictError(
                f"expected_version {body.expected_version} is stale: the active version is "
                f"{active.version}",
                active_version=active.version,
            )
        candidate = candidate_version(active, [make_example(e) for e in body.examples])
        thresholds = await store.get_calibration(active.version)
        comparison = await compare(
            request.app.state.scorer,
            active,
            candidate,
            cases,
            body.score_mode,
            (thresholds or {}).get("thresholds"),
        )
        if body.dry_run:
            return JSONResponse({"dry_run": True, **comparison}, status_code=200)
        tolerance = settings.fewshot_gate_tolerance or 0.0
        drop = -comparison["delta"]["mean_agreement"]
        if drop > tolerance:
            if not body.force:
                raise GateRefusedError(
                    f"the candidate lowers mean agreement on {len(cases)} labeled cases by "
                    f"{drop:.3f}, more than the tolerance {tolerance:.3f}; send force=true to "
                    "add it anyway (recorded in the version note)",
                    comparison=comparison,
                )
            note = (note + " " if note else "") + (
                f"[forced past the agreement gate: mean agreement {-drop:+.3f} on "
                f"{len(cases)} cases]"
            )
    try:
        result = await store.add(body.examples, note, body.expected_version)
    except StaleVersionError as exc:
        raise ConflictError(str(exc), active_version=exc.active) from exc
    request.app.state.metrics.fewshot_version.set(result.version)
    payload = {"version": result.version, "added": result.added, "duplicates": result.duplicates}
    return JSONResponse(payload, status_code=201 if result.created else 200)


def _gate_cases(settings: Settings) -> list[LabeledCase]:
    if settings.fewshot_gate_cases is None:
        return []
    return read_cases(settings.fewshot_gate_cases)


def read_cases(path: Path) -> list[LabeledCase]:
    return [
        LabeledCase.model_validate_json(line)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


@router.get("/calibration")
async def get_calibration(
    version: int | None = None,
    store: BankStore = Depends(get_store),  # noqa: B008
) -> dict[str, Any]:
    """The pass thresholds stored with a version (0.5 each when none was fitted)."""
    bank_version = await _read(store, version)
    stored = await store.get_calibration(bank_version.version)
    if stored is None:
        return {
            "version": bank_version.version,
            "fitted": False,
            "thresholds": dict.fromkeys(DIMENSIONS, 0.5),
        }
    return {**stored, "fitted": True}


@router.put("/calibration", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def put_calibration(
    body: Calibrate,
    request: Request,
    store: BankStore = Depends(get_store),  # noqa: B008
) -> dict[str, Any]:
    """Fit per-dimension pass thresholds for a version on labeled cases (soft scores) and store
    them with the version."""
    bank_version = await _read(store, body.version)
    fitted = await calibrate(request.app.state.scorer, bank_version, body.cases)
    await store.set_calibration(bank_version.version, fitted)
    return {**fitted, "fitted": True}


@router.delete("/{example_id}", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def retire_example(
    example_id: str,
    request: Request,
    body: RetireExample | None = None,
    store: BankStore = Depends(get_store),  # noqa: B008
) -> dict[str, Any]:
    """Retire an example: a new version without it. Older versions keep it."""
    body = body or RetireExample()
    try:
        result = await store.retire(example_id, body.note, body.expected_version)
    except StaleVersionError as exc:
        raise ConflictError(str(exc), active_version=exc.active) from exc
    except ExampleNotFoundError as exc:
        raise NotFoundError(str(exc)) from exc
    request.app.state.metrics.fewshot_version.set(result.version)
    return {"version": result.version, "retired": example_id}
