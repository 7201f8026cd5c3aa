"""A stub OpenAI-compatible judge: answers instantly (or slowly, or wrongly) on purpose.

For tests that need the judge to fail or to be instant, and for the service-overhead benchmark.
It is not a judge: verdicts come from keyword rules on the suggestion, so they are deterministic.

    python -m eqs_reward.judge.stub --port 8021

Control endpoints: ``POST /_stub/config`` (JSON of ``StubBehaviour`` fields), ``GET /_stub/stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_SUGGESTION = re.compile(r"<suggestion>(.*)</suggestion>\s*$", re.DOTALL)
_KEYS = re.compile(r'"(\w+)":\[01\]')


@dataclass
class StubBehaviour:
    """What the stub does next. Counters count down as calls consume them."""

    fail_next: int = 0  # answer the next N calls with ``fail_status``
    fail_status: int = 500
    garbage_next: int = 0  # answer the next N calls with unparseable content
    fail_pattern: str = ""  # answer fail_status for every suggestion containing this text
    fail_keys: str = ""  # answer fail_status to every call asking for these keys ("t": shopper)
    delay_s: float = 0.0  # sleep before answering
    p_one: float = 0.9  # soft mode: probability put on the chosen digit
    follow_examples: bool = False  # answer like a few-shot example showing the same suggestion
    starting: bool = False  # a judge still loading: /v1/models and every call answer 503


@dataclass
class StubJudge:
    behaviour: StubBehaviour = field(default_factory=StubBehaviour)
    calls: int = 0
    suggestions: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    keep_requests: bool = False

    @staticmethod
    def tap(suggestion: str) -> dict[str, int]:
        """Shopper rule: a question with a number or a brand-like capital word gets tapped."""
        words = suggestion.split()
        concrete = any(ch.isdigit() for ch in suggestion) or any(w[:1].isupper() for w in words[1:])
        return {"t": 1 if suggestion.strip().endswith("?") and concrete else 0}

    @staticmethod
    def verdict(suggestion: str) -> dict[str, int]:
        """Keyword rules: assistant voice or private -> a=0, impossible -> f=0, short -> i=0."""
        text = suggestion.lower()
        a = 0 if re.search(r"\b(you want|your|weather|rain)\b", text) else 1
        f = 0 if re.search(r"\b(never|infinite|1 php|time machine|one second)\b", text) else 1
        i = 0 if len(text.split()) < 6 else 1
        return {"a": a, "f": f, "i": i}

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls += 1
        if self.keep_requests:
            self.requests.append(body)
        b = self.behaviour
        if b.starting:
            return JSONResponse({"error": {"message": "stub starting"}}, status_code=503)
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.fail_next > 0:
            b.fail_next -= 1
            return JSONResponse({"error": {"message": "stub failure"}}, status_code=b.fail_status)
        last = body["messages"][-1]["content"]
        match = _SUGGESTION.search(last)
        suggestion = json.loads(match.group(1).replace("\\u003c", "<")) if match else last
        if b.fail_pattern and b.fail_pattern in suggestion:
            return JSONResponse({"error": {"message": "stub failure"}}, status_code=b.fail_status)
        keys = _KEYS.findall((body.get("structured_outputs") or {}).get("regex", "")) or ["a"]
        if b.fail_keys and "".join(keys) == b.fail_keys:
            return JSONResponse({"error": {"message": "stub failure"}}, status_code=b.fail_status)
        self.suggestions.append(suggestion)
        if keys == ["t"]:  # the simulated shopper: would I tap it?
            verdict = self.tap(suggestion)
        else:
            verdict = self.verdict(suggestion)
            if b.follow_examples:
                verdict = self.from_examples(body["messages"], suggestion) or verdict
        content = json.dumps(verdict, separators=(",", ":"))
        if b.garbage_next > 0:
            b.garbage_next -= 1
            content = "I think this suggestion is fine."
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": self._logprobs(content, b.p_one)}
        return JSONResponse(
            {
                "id": f"stub-{self.calls}",
                "object": "chat.completion",
                "model": body.get("model", "stub"),
                "choices": [choice],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(content), "total_tokens": 0},
            }
        )

    @staticmethod
    def from_examples(messages: list[dict[str, str]], suggestion: str) -> dict[str, int] | None:
        """The verdict a few-shot example gave the same suggestion, if the prompt shows one:
        a judge that learns from its examples, for tests of gating a bank change."""
        for user, answer in zip(messages[1:-1:2], messages[2:-1:2], strict=False):
            shown = _SUGGESTION.search(user.get("content", ""))
            if shown and json.loads(shown.group(1).replace("\\u003c", "<")) == suggestion:
                try:
                    return {k: int(v) for k, v in json.loads(answer["content"]).items()}
                except (ValueError, KeyError):
                    return None
        return None

    @staticmethod
    def _logprobs(content: str, p_one: float) -> list[dict[str, Any]]:
        out = []
        for char in content:
            entry: dict[str, Any] = {"token": char, "logprob": 0.0, "top_logprobs": []}
            if char in "01":
                other = "1" if char == "0" else "0"
                entry["logprob"] = math.log(p_one)
                entry["top_logprobs"] = [
                    {"token": char, "logprob": math.log(p_one)},
                    {"token": other, "logprob": math.log(1 - p_one)},
                ]
            out.append(entry)
        return out

    async def models(self, _: Request) -> JSONResponse:
        if self.behaviour.starting:
            return JSONResponse({"error": {"message": "stub starting"}}, status_code=503)
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def health(self, _: Request) -> JSONResponse:
        return JSONResponse({})

    async def configure(self, request: Request) -> JSONResponse:
        updates = await request.json()
        names = {f.name for f in fields(StubBehaviour)}
        for key, value in updates.items():
            if key in names:
                setattr(self.behaviour, key, value)
        return JSONResponse(asdict(self.behaviour))

    async def stats(self, _: Request) -> JSONResponse:
        return JSONResponse({"calls": self.calls, "behaviour": asdict(self.behaviour)})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models),
                Route("/health", self.health),
                Route("/_stub/config", self.configure, methods=["POST"]),
                Route("/_stub/stats", self.stats),
            ]
        )


def main() -> None:  # pragma: no cover - exercised as a subprocess by the tests
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    judge = StubJudge(StubBehaviour(delay_s=args.delay))
    uvicorn.run(judge.app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":  # pragma: no cover
    main()
