"""Where eqs-reward keeps its files by default, from the environment alone (no settings object):
the server's settings and the offline tools (which do not install the server) agree on it."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """``$EQS_REWARD_DATA_DIR``, else ``$XDG_DATA_HOME/eqs-reward`` (``~/.local/share/...``)."""
    explicit = os.environ.get("EQS_REWARD_DATA_DIR", "").strip()
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "eqs-reward"


def default_models_dir() -> Path:
    """``$EQS_REWARD_MODEL_CACHE_DIR``, else ``<data dir>/models``: where the embedded judge's
    model (also the thin trainer's default policy) is prepared."""
    explicit = os.environ.get("EQS_REWARD_MODEL_CACHE_DIR", "").strip()
    return Path(explicit) if explicit else default_data_dir() / "models"
