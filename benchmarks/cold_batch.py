"""The 32-worker first batch after warm_up(): djthreads against its raw floor, gc on and off.

Usage: cd benchmarks && python cold_batch.py VENV ROUNDS DJTHREADS_APPROACH RAW_APPROACH
  e.g. python cold_batch.py bench-pg2 8 djthreads-reuse raw
       python cold_batch.py bench-pg3 6 djthreads-pool raw-pool
  (run by hand, not by ``make bench``.)

Runs ``scaling.py APPROACH 32 640 50 warm-up [no-gc]`` in a fresh process per
figure (``run.run``), alternating the two approaches, with the cyclic garbage
collector on and, in a second set, disabled. Prints one JSON line per
(gc, approach): median cold and warm efficiency with their spread. What a
cold batch loses against the warm one is one full collection, 13-33 ms with
the GIL held, of the objects Django's startup left: the first batch's
allocations trigger it. The raw floors' warm-up leaves it to the first batch;
djthreads' ``warm_up()`` runs it ahead (``collect=True``).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from run import run

VENV, ROUNDS, APPROACHES = sys.argv[1], int(sys.argv[2]), sys.argv[3:5]
PYTHON = Path(__file__).resolve().parent.parent / ".venv" / VENV / "bin" / "python"

figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
for _ in range(ROUNDS):
    for gc_mode in ("on", "off"):
        for approach in APPROACHES:
            options = ["warm-up"] + (["no-gc"] if gc_mode == "off" else [])
            [line] = run(PYTHON, "scaling.py", approach, 32, 640, 50, *options)
            figures.setdefault((gc_mode, approach), []).append(
                (line["efficiency"], line["warm_efficiency"])
            )
for (gc_mode, approach), values in figures.items():
    cold = [c for c, _ in values]
    warm = [w for _, w in values]
    print(
        json.dumps(
            {
                "bench": "cold_batch",
                "gc": gc_mode,
                "approach": approach,
                "rounds": len(values),
                "cold": round(statistics.median(cold), 3),
                "cold_min": min(cold),
                "cold_max": max(cold),
                "warm": round(statistics.median(warm), 3),
                "warm_min": min(warm),
                "warm_max": max(warm),
            }
        )
    )
