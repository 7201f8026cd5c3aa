"""``/v1/fewshot``: read the versioned bank; add and retire examples (admin token)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.bank import BankStore, ExampleNotFoundError, StaleVersionError
from service.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from service.fewshot import BankVersion, ExampleIn, VersionNotFoundError
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
    try:
        result = await store.add(body.examples, body.note, body.expected_version)
    except StaleVersionError as exc:
        raise ConflictError(str(exc), active_version=exc.active) from exc
    request.app.state.metrics.fewshot_version.set(result.version)
    payload = {"version": result.version, "added": result.added, "duplicates": result.duplicates}
    return JSONResponse(payload, status_code=201 if result.created else 200)


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
