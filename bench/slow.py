"""One stage that sleeps `sleep` seconds: a worker's processes kept busy, for bench.footprint.

Workers load it with VETRO_PIPELINES=bench.slow.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline import Pipeline, Stage, register, stage


@stage("sleep", "slow", time_limit=30, soft_time_limit=25)
def sleep(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(payload.get("sleep", 0)))
    return payload


SLOW = register(Pipeline("slow", [sleep]))
