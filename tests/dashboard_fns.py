"""Callbacks the dashboard's pseudo-terminal tests name with --fn (tests/ is on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Any


def slow(record: dict[str, Any]) -> dict[str, Any]:
    """$BG_SLEEP seconds a record, so a test can look at the screen mid-run; the record whose
    id is $BG_FLAKY_ID fails its first try (a retry to show), a seen-file remembering it."""
    time.sleep(float(os.environ.get("BG_SLEEP", "0.2")))
    if str(record["id"]) == os.environ.get("BG_FLAKY_ID"):
        seen = f"flaky-{record['id']}.seen"
        if not os.path.exists(seen):
            open(seen, "w").close()
            raise ConnectionError("connection reset by peer")
    return record
