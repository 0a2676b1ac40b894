"""Throughput as a worker gets more processes: vetro and raw Celery with 1, 2 and 4 prefork processes.

The same trial as bench.throughput (N jobs published first, figures read from the worker being
ready until the last job finished), once per kind and process count. On a 2-core machine, 4
processes show what oversubscription costs rather than more speed. Prints one JSON line.

    .venv/bin/python -m bench.scaling --jobs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack

from bench.throughput import private_setup, trial

KEPT = ("jobs_per_s", "worker_cpu_ms_per_job", "worker_pss_mib", "load_1m", "other_cpu_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    options = parser.parse_args()
    runs = []
    with ExitStack() as stack:
        env, servers = private_setup(stack)
        for processes in options.processes:
            for kind in ("vetro", "raw"):
                found = trial(kind, options.jobs, env, servers, processes)
                runs.append({"kind": kind, "processes": processes} | {name: found[name] for name in KEPT})
                print(json.dumps(runs[-1]), file=sys.stderr)
    result = {
        "benchmark": "scaling",
        "jobs": options.jobs,
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
        "vetro_over_raw_jobs_per_s": {
            str(p): round(v["jobs_per_s"] / r["jobs_per_s"], 2)
            for p in options.processes
            for v in runs
            for r in runs
            if v["processes"] == r["processes"] == p and v["kind"] == "vetro" and r["kind"] == "raw"
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
