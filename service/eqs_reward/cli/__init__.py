"""``eqs-reward``: serve rewards, run the embedded judge, score files, operate the few-shot bank,
train, mine and evaluate.

Each command imports only what its audience installed; a command whose extra is missing says
which one to install instead of a traceback. Calls to a running service go through
``eqs_reward.client`` (its retries, its error messages, the admin token from
``EQS_REWARD_ADMIN_TOKEN``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

from eqs_reward._jsonl import JsonlError
from eqs_reward.cli._parser import build_parser
from eqs_reward.client import RewardServiceError

__all__ = ["build_parser", "main"]


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
