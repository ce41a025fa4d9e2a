"""Where rlvr keeps what it computes once per machine (converted models, search indexes, hardware probes)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """`$RLVR_CACHE`, else the user cache directory (`~/.cache/rlvr` on Linux)."""
    return Path(os.environ.get("RLVR_CACHE", user_cache_dir("rlvr")))
