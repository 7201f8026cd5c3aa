"""The click-model head: P(click) per suggestion from the operator's fitted click model
(``eqs-reward clicks fit LOGS.jsonl``), and GQR's ``1 - prod(1 - p_k)`` for the list."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from eqs_reward.clicks import ClickModel, ClickStore, Impression, any_click
from eqs_reward.judge.cases import Context
from eqs_reward.server.heads._base import HeadUnavailableError, Reread

__all__ = ["ClickModelUnavailableError", "ClicksHead"]


class ClickModelUnavailableError(HeadUnavailableError):
    """No click model has been fitted (``eqs-reward clicks fit LOGS.jsonl``)."""


class ClicksHead:
    """Serves the newest stored click model (re-read every few seconds, so a fit by another
    process shows without a restart). A suggestion's position is its index in the list."""

    name = "clicks"

    def __init__(self, folder: Path) -> None:
        self.store = ClickStore(folder)
        self._model: Reread[ClickModel] = Reread(
            ClickModelUnavailableError,
            "no click model is fitted: run 'eqs-reward clicks fit LOGS.jsonl'",
        )

    def model(self) -> ClickModel:
        if self._model.due():
            versions, current = self.store.versions(), self._model.value
            fitted = versions and (current is None or current.version != versions[-1])
            self._model.set(self.store.latest() if fitted else current)
        return self._model.current()

    async def head_version(self) -> str:
        return f"clicks-v{self.model().version}"

    async def score(
        self, items: Sequence[tuple[Context, Sequence[str]]]
    ) -> list[tuple[list[dict[str, float]], dict[str, float]]]:
        model = self.model()
        rows = [
            Impression(context.query, text, position)
            for context, suggestions in items
            for position, text in enumerate(suggestions)
        ]
        probabilities = await asyncio.to_thread(model.predict, rows)
        out = []
        start = 0
        for _, suggestions in items:
            mine = probabilities[start : start + len(suggestions)]
            start += len(suggestions)
            out.append(([{"p_click": p} for p in mine], {"any_click": any_click(mine)}))
        return out
