"""What every command shares: the extras check, logging, settings."""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

log = logging.getLogger("eqs_reward.cli")

# The modules each extra brings, checked before a command imports them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "pydantic_settings", "redis", "prometheus_client", "sklearn"),
    "embedded": ("vllm", "transformers", "safetensors", "gguf"),
    "train": ("trl", "datasets", "transformers", "matplotlib"),
    "eval": ("sklearn", "matplotlib"),
}
DEFAULT_URL = "http://127.0.0.1:8000"


class MissingExtra(SystemExit):
    """A command needs an extra that is not installed (exit status 2, with the pip line)."""

    def __init__(self, extra: str, command: str, missing: list[str], hint: str = "") -> None:
        message = (
            f"eqs-reward {command} needs the '{extra}' extra (missing: {', '.join(missing)}): "
            f"pip install 'eqs-reward[{extra}]'{hint}"
        )
        print(message, file=sys.stderr)
        super().__init__(2)


def require(extra: str, command: str, hint: str = "") -> None:
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(extra, command, missing, hint)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per judge call drowns the log at training rates; failures are logged by us.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def settings_with(**overrides: Any) -> Any:
    require("server", "this command")
    from eqs_reward.server.settings import Settings

    return Settings(**overrides)
