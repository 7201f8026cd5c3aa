"""What the trainer tests feed the adapters: completions of three options (BAD fails at the stub
judge: it holds FAILME), and the rewards of GOOD and SHORT under the stub's soft scores (0.9 on
its verdict: all pass / no information gain)."""

from __future__ import annotations

import json

from tests._helpers import FAILME

GOOD = [
    "Which blenders under $80 can crush ice?",
    "Are there glass jar blenders with 1000 W?",
    "Do you have Vitamix blenders with a 7-year warranty?",
]
SHORT = ["Blenders under $50?", "Any glass blenders here?", "Quiet blenders for mornings?"]
BAD = [f"{FAILME} blenders?", f"{FAILME} glass ones?", f"{FAILME} quiet ones?"]
R_GOOD, R_SHORT = 0.9**3, 0.9 * 0.9 * 0.1


def text(options: list[str]) -> str:
    """A policy's completion: the JSON the format reward expects."""
    return json.dumps({"options": options})
