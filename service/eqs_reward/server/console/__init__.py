"""The operator console at ``/console``: server-rendered pages over the review queue and the bank
(sign in with the admin token; the queue with filters; a case with its context, verdicts and
every head's signals, and a label form; the gate's preview and publishing; the bank's versions
and the difference between two; the current calibration; a link to Grafana).

Every page is rendered by Jinja2 with autoescaping (suggestions and contexts are policy and
shopper text, attacker-controlled) and answered with a strict Content-Security-Policy: no
script at all, styles from the console itself. Forms are plain HTML posts; the pages work
without JavaScript. The rules live in the review queue and the bank service; these routes only
translate HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from eqs_reward.judge.cases import Labels
from eqs_reward.server.bank import BankService
from eqs_reward.server.console._auth import COOKIE, ConsoleAuth
from eqs_reward.server.errors import InvalidRequestError, NotFoundError
from eqs_reward.server.review import ReviewQuery, ReviewQueue
from eqs_reward.server.schemas import PublishCases
from eqs_reward.types import DIMENSIONS

__all__ = ["ConsoleAuth", "router"]

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)

router = APIRouter(prefix="/console", include_in_schema=False)


def _auth(request: Request) -> ConsoleAuth:
    auth: ConsoleAuth = request.app.state.console_auth  # built with the app (build_app)
    return auth


def _queue(request: Request) -> ReviewQueue:
    queue: ReviewQueue | None = request.app.state.review
    if queue is None:
        raise NotFoundError("the review queue is off on this service (EQS_REWARD_REVIEW_ENABLED)")
    return queue


def _page(request: Request, template: str, sid: str | None, **values: Any) -> HTMLResponse:
    settings = request.app.state.settings
    html = _PAGES.get_template(template).render(
        csrf=_auth(request).csrf(sid) if sid else "",
        grafana=settings.console_grafana_url,
        dimensions=DIMENSIONS,
        **values,
    )
    return HTMLResponse(html, headers=_headers())


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _see(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=_headers())


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form's fields (the last value of each)."""
    body = (await request.body()).decode("utf-8")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


async def _posted(request: Request) -> tuple[str, dict[str, str]]:
    """The session and the fields of a console form; 401 without a session, 403 without the
    session's CSRF token."""
    auth = _auth(request)
    sid = auth.session(request.cookies.get(COOKIE))
    form = await _form(request)
    auth.check_csrf(sid, form.get("csrf"))
    return sid, form


def _session(request: Request) -> str | None:
    """The session of a page view: None without a cookie (the page sends the browser to sign
    in); a cookie that is not a valid session is refused (401)."""
    cookie = request.cookies.get(COOKIE)
    return None if cookie is None else _auth(request).session(cookie)


# -- signing in ----------------------------------------------------------------------------------
@router.get("/login")
async def login_page(request: Request) -> Response:
    return _page(request, "login.html", None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    cookie = _auth(request).sign_in(form.get("token", ""))
    response = _see("/console")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=_auth(request).max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _posted(request)
    response = _see("/console/login")
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/static/console.css")
async def stylesheet() -> Response:
    css = (HERE / "static" / "console.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers=_headers())


# -- the queue and a case ------------------------------------------------------------------------
@router.get("")
async def queue_page(
    request: Request,
    reason: Annotated[str, Query(max_length=64)] = "",
    labeled: Annotated[str, Query(pattern="^(|yes|no)$")] = "",
    recipe: Annotated[str, Query(max_length=64)] = "",
    after: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    sid = _session(request)
    if sid is None:
        return _see("/console/login")
    query = ReviewQuery(
        reason=reason or None,
        recipe=recipe or None,
        labeled={"yes": True, "no": False}.get(labeled),
    )
    items, cursor = await _queue(request).page(query, 50, after or None)
    filters = {"reason": reason, "labeled": labeled, "recipe": recipe}
    return _page(request, "queue.html", sid, items=items, next_after=cursor, filters=filters)


@router.get("/case/{case_id}")
async def case_page(request: Request, case_id: str) -> Response:
    sid = _session(request)
    if sid is None:
        return _see("/console/login")
    item = await _queue(request).get(case_id)
    if item is None:
        raise NotFoundError(f"no review case {case_id}")
    return _page(request, "case.html", sid, item=item)


@router.post("/case/{case_id}/label")
async def label_case(request: Request, case_id: str) -> Response:
    _, form = await _posted(request)
    try:
        labels = Labels.model_validate({d: int(form.get(d, "")) for d in DIMENSIONS})
    except ValueError as exc:
        raise InvalidRequestError("each label is 0 or 1") from exc
    rationale = form.get("rationale", "")[:500]
    if await _queue(request).label(case_id, labels, rationale) is None:
        raise NotFoundError(f"no review case {case_id}")
    return _see(f"/console/case/{case_id}")


# -- publishing ----------------------------------------------------------------------------------
@router.get("/publish")
async def publish_page(request: Request) -> Response:
    sid = _session(request)
    if sid is None:
        return _see("/console/login")
    limit = request.app.state.settings.fewshot_max_examples_per_add
    items = await _queue(request).publishable(None, limit)
    return _page(request, "publish.html", sid, items=items, comparison=None)


@router.post("/publish")
async def publish(request: Request) -> Response:
    sid, form = await _posted(request)
    bank: BankService = request.app.state.bank_service
    preview = form.get("action") == "preview"
    change = PublishCases(
        note=form.get("note", "")[:500],
        dry_run=preview,
        # the preview's figures: the configured gate cases, else the packaged validation cases
        cases=bank.gate_cases(packaged=True) if preview else None,
    )
    limit = request.app.state.settings.fewshot_max_examples_per_add
    items, outcome = await _queue(request).publish(bank, change, limit, via="console")
    if outcome.write is None:
        return _page(request, "publish.html", sid, items=items, comparison=outcome.comparison)
    return _see(f"/console/bank?b={outcome.write.version}")


# -- the bank ------------------------------------------------------------------------------------
@router.get("/bank")
async def bank_page(
    request: Request,
    a: Annotated[int | None, Query(ge=1)] = None,
    b: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    sid = _session(request)
    if sid is None:
        return _see("/console/login")
    bank: BankService = request.app.state.bank_service
    infos, active = await bank.store.versions(1000, 0)
    newer = await bank.read(b or active)
    older = await bank.read(a or max(1, newer.version - 1))
    before = {e.id for e in older.examples}
    after = {e.id for e in newer.examples}
    diff = {
        "a": older.version,
        "b": newer.version,
        "added": [e for e in newer.examples if e.id not in before],
        "removed": [e for e in older.examples if e.id not in after],
    }
    calibration = await bank.calibration(active)
    return _page(
        request, "bank.html", sid, versions=infos, active=active, diff=diff, calibration=calibration
    )
