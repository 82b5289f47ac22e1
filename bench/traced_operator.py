"""The operator under tracemalloc, for `operator_bench.py --trace-memory`: where its memory is held.

Runs `python -m conveyor.controller` in this process with tracemalloc on; on SIGUSR2 it writes the
Python heap it traces (total, and the biggest holders by file and line and by call site) as JSON to
$CONVEYOR_BENCH_TRACE_OUT. What RSS holds beyond the traced total is the allocator's (freed memory
glibc keeps, per-thread arenas) and native libraries'.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import threading
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 8


def _report() -> dict[str, object]:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    )
    current, peak = tracemalloc.get_traced_memory()
    by_line = snapshot.statistics("lineno")
    by_trace = snapshot.statistics("traceback")
    return {
        "traced_mib": round(current / 2**20, 1),
        "traced_peak_mib": round(peak / 2**20, 1),
        "top_lines": [
            {"mib": round(s.size / 2**20, 2), "count": s.count, "where": str(s.traceback[0])} for s in by_line[:40]
        ],
        "top_call_sites": [
            {"mib": round(s.size / 2**20, 2), "count": s.count, "stack": [str(f) for f in s.traceback]}
            for s in by_trace[:15]
        ],
    }


def _dump(_signum: int, _frame: FrameType | None) -> None:
    out = Path(os.environ["CONVEYOR_BENCH_TRACE_OUT"])

    def write() -> None:  # off the signal handler: a snapshot takes seconds
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(_report(), indent=1))
        tmp.replace(out)

    threading.Thread(target=write, name="trace-dump", daemon=True).start()


if __name__ == "__main__":
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR2, _dump)
    sys.argv = ["conveyor.controller", *sys.argv[1:]]
    runpy.run_module("conveyor.controller", run_name="__main__", alter_sys=True)
