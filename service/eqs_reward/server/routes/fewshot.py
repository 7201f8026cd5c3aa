"""``/v1/fewshot``: read the versioned bank; add and retire examples and fit calibrations (admin
token). The rules of a change live in the bank service; these routes only translate HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from eqs_reward.server._http import json_response, json_stream_response
from eqs_reward.server.bank import BankService, BankVersion
from eqs_reward.server.routes._deps import get_bank, require_admin
from eqs_reward.server.routes._responses import ADMIN, BODY, COMMON, errors
from eqs_reward.server.schemas import AddExamples, Calibrate, RetireExample
from eqs_reward.server.settings import MAX_INT64

router = APIRouter(prefix="/v1/fewshot", tags=["few-shot bank"])

# The bounds sit on the int inside the optional type: on the union, the schema would publish
# them as ``ge``/``le`` (not JSON Schema) and clients would take ``version=0`` for valid.
VersionQuery = Annotated[
    Annotated[int, Field(ge=1, le=MAX_INT64)] | SkipJsonSchema[None],
    Query(description="a version number; default: the active one"),
]


def version_response(version: BankVersion) -> Response:
    """The version's examples are streamed one by one (a bank of thousands is megabytes)."""
    head = {
        "version": version.version,
        "created_at": version.created_at.isoformat(),
        "note": version.note,
        "example_count": len(version.examples),
    }
    return json_stream_response(
        head, "examples", (e.model_dump(mode="json") for e in version.examples)
    )


@router.get(
    "",
    response_model=None,
    responses={
        200: {
            "description": "the version: version, created_at, note, example_count, examples",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **errors(*COMMON, 404),
    },
)
async def list_examples(
    version: VersionQuery = None,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> Response:
    """The active version and its examples, in prompt order (``?version=N`` for another)."""
    return version_response(await bank.read(version))


@router.get("/versions", responses=errors(*COMMON))
async def list_versions(
    limit: Annotated[int, Query(ge=1, le=1000, description="versions per page")] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_INT64, description="the page after this version")] = 0,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> dict[str, Any]:
    """A page of versions, oldest first, with creation time, note and example count; ``active``
    is the newest version, ``next_after`` the cursor of the next page (null on the last)."""
    infos, latest = await bank.store.versions(limit, after)
    last = infos[-1].version if infos else after
    return {
        "active": latest or None,
        "versions": [
            {
                "version": v.version,
                "created_at": v.created_at.isoformat(),
                "note": v.note,
                "example_count": v.example_count,
            }
            for v in infos
        ],
        "next_after": last if last < latest else None,
    }


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses={
        200: {"description": "dry run: the comparison; or every example was already present"},
        201: {
            "description": "the new version",
            # OpenAPI links: what a client (and schemathesis's stateful phase) may do next.
            "links": {
                "ReadVersion": {
                    "operationId": "list_examples_v1_fewshot_get",
                    "parameters": {"version": "$response.body#/version"},
                },
                "ReadCalibration": {
                    "operationId": "get_calibration_v1_fewshot_calibration_get",
                    "parameters": {"version": "$response.body#/version"},
                },
                "RetireAdded": {
                    "operationId": "retire_example_v1_fewshot__example_id__delete",
                    "parameters": {"example_id": "$response.body#/added/0"},
                },
            },
        },
        **errors(*BODY, *ADMIN, 409),
    },
)
async def add_examples(
    body: AddExamples,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> Response:
    """Add examples as a new version (201). Examples already in the active version are not
    added twice: if nothing is new, 200 with the unchanged version (safe to retry). With
    ``dry_run``, 200 with the comparison of the active and the candidate version."""
    outcome = await bank.add(body)
    if outcome.write is None:
        return json_response({"dry_run": True, **(outcome.comparison or {})})
    write = outcome.write
    payload = {"version": write.version, "added": write.added, "duplicates": write.duplicates}
    return json_response(payload, status_code=201 if write.created else 200)


@router.get("/calibration", responses=errors(*COMMON, 404))
async def get_calibration(
    version: VersionQuery = None,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> dict[str, Any]:
    """The pass thresholds stored with a version (0.5 each when none was fitted)."""
    return await bank.calibration(version)


@router.put(
    "/calibration",
    dependencies=[Depends(require_admin)],
    responses=errors(*BODY, *ADMIN, 404),
)
async def put_calibration(
    body: Calibrate,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> dict[str, Any]:
    """Fit per-dimension pass thresholds for a version on labeled cases (soft scores) and store
    them with the version."""
    return await bank.calibrate(body.version, body.cases)


@router.delete(
    "/{example_id}",
    dependencies=[Depends(require_admin)],
    responses=errors(*BODY, *ADMIN, 404, 409),
)
async def retire_example(
    example_id: Annotated[str, Path(max_length=100)],
    body: RetireExample | None = None,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> dict[str, Any]:
    """Retire an example: a new version without it. Older versions keep it."""
    body = body or RetireExample()
    result = await bank.retire(example_id, body.note, body.expected_version)
    return {"version": result.version, "retired": example_id}
