"""Run every benchmark and write benchmarks/results.{json,md,png}.

Usage (``make bench`` does this after building the three bench venvs):
    .venv/bench-pg2/bin/python benchmarks/run.py [--quick] [--only-durable] [--only-backend]

Each measurement runs in a fresh process: psycopg2 figures in
.venv/bench-pg2, psycopg 3 + pool figures in .venv/bench-pg3 (Django picks
psycopg 3 whenever it is importable, so one venv cannot measure both).
``--quick`` shrinks every count, to check the scripts, not to quote;
``--only-durable`` runs and prints the durable-tasks section alone
(.venv/bench-durable: Python 3.13, Django 6.1, django-tasks-db and the
optional django-tasks-local-db), writing no result file; ``--only-backend``
the same for the ThreadPoolBackend section (django-tasks-local, optional).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PG2 = ROOT / ".venv" / "bench-pg2" / "bin" / "python"
PG3 = ROOT / ".venv" / "bench-pg3" / "bin" / "python"
# Python 3.13 + Django 6.1: django-tasks-local-db needs Django >= 6.0.
DURABLE = ROOT / ".venv" / "bench-durable" / "bin" / "python"

QUICK = "--quick" in sys.argv
OVERHEAD_ROUNDS = 2 if QUICK else 15
N, LATENCY_MS = (64, 20) if QUICK else (640, 50)
WORKERS = [1, 4, 8, 16, 32]
SCALING_ROUNDS = 1 if QUICK else 5  # for W >= 16; fewer workers take long and vary little
MEMORY_TASKS = 20_000 if QUICK else 1_000_000
HUEY_TASKS = 2_000 if QUICK else 10_000
DURABLE_TASKS = 300 if QUICK else 2_000
# (runner of durable_bench.py, tasks for throughput, latency samples): a
# 1-second poll takes half a second a sample, so it gets fewer.
DURABLE_RUNNERS = [
    ("threadpool", DURABLE_TASKS, 200),
    ("durable", DURABLE_TASKS, 200),
    ("local-db:1", 40, 20),
    ("local-db:0.01", DURABLE_TASKS // 4, 100),
    ("db-worker:0.01", DURABLE_TASKS, 100),
]
DURABLE_LABELS = {
    "threadpool": "ThreadPoolBackend (in memory)",
    "durable": "DurableBackend (djthreads.durable)",
    "local-db:1": "django-tasks-local-db, POLL_INTERVAL=1 (its default)",
    "local-db:0.01": "django-tasks-local-db, POLL_INTERVAL=0.01",
    "db-worker:0.01": "django-tasks-db, 8 db_worker processes, --interval 0.01",
}

# (label, python, approach): serial is the W=1 figure of every approach (one
# worker runs the tasks one after the other); the others run at W >= 4.
APPROACHES = [
    ("serial", PG2, "serial"),
    ("djthreads (psycopg2, close)", PG2, "djthreads"),
    ("djthreads (psycopg2, reuse)", PG2, "djthreads-reuse"),
    ("djthreads (psycopg 3 pool)", PG3, "djthreads-pool"),
    ("multiprocessing.Process chunks", PG2, "multiprocessing"),
    ("asgiref sync_to_async + gather", PG2, "asgiref"),
    ("raw ThreadPoolExecutor, connections kept (floor)", PG2, "raw"),
]
# Started and connected before the first batch, outside the timing (a server's
# startup): djthreads' warm_up() against the raw pool given the same threads and
# connections (warm_up() also collects the garbage; the raw floors do not).
WARMED_WORKERS = [16, 32]
WARMED = [
    ("djthreads (psycopg2, reuse) + warm_up()", PG2, "djthreads-reuse"),
    ("djthreads (psycopg 3 pool) + warm_up()", PG3, "djthreads-pool"),
    ("raw ThreadPoolExecutor, connections kept, warmed (floor)", PG2, "raw"),
    ("raw ThreadPoolExecutor + psycopg 3 pool, warmed (floor)", PG3, "raw-pool"),
]


def run(python: Path, *argv: object) -> list[dict[str, Any]]:
    cmd = [str(python), str(HERE / str(argv[0])), *map(str, argv[1:])]
    print("+", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=HERE, timeout=600)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def settle() -> float:
    """Let PostgreSQL finish background work before a measurement (seconds waited)."""
    code = "import sys; sys.path.insert(0, '.'); import _common as c; print(c.settle_postgres())"
    out = subprocess.run(
        [str(PG2), "-c", code], check=True, capture_output=True, text=True, cwd=HERE
    )
    return float(out.stdout)


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = subprocess.run(
        [
            str(PG2),
            "-c",
            "import sys; sys.path.insert(0, '.'); import _common as c, django; "
            "conn = c.raw_connect('postgres'); cur = conn.cursor(); "
            "cur.execute('SHOW server_version'); "
            "print(django.__version__, cur.fetchone()[0])",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE,
    ).stdout.split()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "django": info[0],
        "postgresql": info[1],
        "load_at_start": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": QUICK,
    }


def collect() -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "overhead": [], "scaling": []}
    settled = []
    for mode, python in (("close", PG2), ("reuse", PG2), ("pool", PG3)):
        settled.append(settle())
        results["overhead"] += run(python, "overhead.py", mode, OVERHEAD_ROUNDS)
    results["machine"]["pg_settle_s"] = settled
    plans = [
        (label, python, approach, workers, ())
        for label, python, approach in APPROACHES
        for workers in WORKERS
        if (workers == 1) == (approach == "serial")
    ]
    plans += [
        (label, python, approach, workers, ("warm-up",))
        for label, python, approach in WARMED
        for workers in WARMED_WORKERS
    ]
    # Processes of the W >= 16 rows run round-robin over the rows, not a row's
    # rounds back to back: a slow minute of the machine then lands on every
    # row of a round alike, rather than on one row against its floor.
    figures: list[list[dict[str, Any]]] = [[] for _ in plans]
    for round_number in range(SCALING_ROUNDS):
        for figure, (_, python, approach, workers, extra) in zip(figures, plans, strict=True):
            if round_number == 0 or workers >= 16:
                figure += run(python, "scaling.py", approach, workers, N, LATENCY_MS, *extra)
    for (label, *_), rows in zip(plans, figures, strict=True):
        rows.sort(key=lambda f: f["elapsed_s"])
        median = {**rows[len(rows) // 2], "label": label, "rounds": len(rows)}
        if median["warm_efficiency"] is not None:
            warm = sorted(f["warm_efficiency"] for f in rows)
            median["warm_efficiency"] = warm[len(warm) // 2]
            median["warm_efficiency_min"], median["warm_efficiency_max"] = warm[0], warm[-1]
        # The spread across processes, so a target met in only some is visible.
        median["efficiency_min"] = min(f["efficiency"] for f in rows)
        median["efficiency_max"] = max(f["efficiency"] for f in rows)
        results["scaling"].append(median)
    results["memory"] = run(PG2, "memory.py", MEMORY_TASKS)[0]
    results["huey"] = run(PG2, "huey_bench.py", HUEY_TASKS)
    results["durable"] = collect_durable()
    results["backend"] = collect_backend()
    return results


def collect_durable() -> list[dict[str, Any]]:
    return [
        run(DURABLE, "durable_bench.py", runner, tasks, samples)[0]
        for runner, tasks, samples in DURABLE_RUNNERS
    ]


def durable_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The durable section: one row per runner, then the two targets."""
    lines = [
        "## Durable tasks: DurableBackend, django-tasks-local-db and db_worker",
        "",
        "No-op Django tasks, 8 workers each (pool threads; db_worker processes), PostgreSQL",
        "through psycopg2, Python 3.13 + Django 6.1 (.venv/bench-durable). Latency: tasks",
        "enqueued one at a time in autocommit, each once the previous one finished, from",
        "the `enqueue()` call (its commit included) to the task's first line; throughput:",
        "tasks enqueued in one transaction, tasks / (last finish - commit).",
        "",
        "| runner | samples | enqueue-to-start p50 ms | p99 ms | tasks | tasks/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    measured = {}
    for r in rows:
        label = DURABLE_LABELS.get(r["runner"], r["runner"])
        if "skipped" in r:
            lines.append(f"| {label} | skipped: {r['skipped']} | | | | |")
            continue
        measured[r["runner"]] = r
        lines.append(
            f"| {label} | {r['samples']} | {r['p50_ms']} | {r['p99_ms']} | {r['tasks']:,} | "
            f"{r['tasks_per_s']:,} |"
        )
    durable = measured.get("durable")
    local = [r for key, r in measured.items() if key.startswith("local-db")]
    lines.append("")
    if durable is not None:
        met = "met" if durable["p50_ms"] <= 10 else "MISSED"
        lines.append(f"Target: DurableBackend p50 <= 10 ms: {durable['p50_ms']} ms ({met}).")
    if durable is not None and local:
        best = max(local, key=lambda r: r["tasks_per_s"])
        ratio = durable["tasks_per_s"] / best["tasks_per_s"]
        met = "met" if ratio >= 5 else "MISSED"
        lines.append(
            f"Target: DurableBackend throughput >= 5x django-tasks-local-db's best poll "
            f"setting ({DURABLE_LABELS.get(best['runner'], best['runner'])}): "
            f"{ratio:.1f}x ({met})."
        )
    elif durable is not None:
        lines.append("django-tasks-local-db is not installed: no throughput ratio.")
    return lines


# -- ThreadPoolBackend against django-tasks-local and submit() (backend_bench.py) --------

# (tasks per round: no-op, SELECT 1; rounds), in .venv/bench-durable: django-tasks-local
# needs Django 6.
BACKEND_TASKS = (1_000, 200, 2) if QUICK else (5_000, 2_000, 5)
BACKEND_MODES = {
    "close": "psycopg2, connections closed after each task (default)",
    "reuse": "psycopg2, REUSE_CONNECTIONS (CONN_MAX_AGE=None)",
}
BACKEND_LABELS = {
    "submit": "`djthreads.submit()`",
    "backend": "ThreadPoolBackend",
    "quiet": "ThreadPoolBackend, django.tasks logger at WARNING",
    "local": "django-tasks-local ThreadPoolBackend",
}


def collect_backend() -> list[dict[str, Any]]:
    return [
        figure
        for mode in BACKEND_MODES
        for figure in run(DURABLE, "backend_bench.py", mode, *BACKEND_TASKS)
    ]


def _with_spread(row: dict[str, Any], key: str, unit: str = "") -> str:
    """``row[key]`` with its spread across rounds when there were several; "" if absent."""
    if row.get(key) is None:
        return ""
    text = f"{row[key]}{unit}"
    if row.get("rounds", 1) > 1 and f"{key}_min" in row:
        text += f" ({row[key + '_min']}-{row[key + '_max']})"
    return text


def _spread(row: dict[str, Any], other: str) -> str:
    return _with_spread(row, f"ratio_to_{other}", "x")


def backend_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The ThreadPoolBackend section: one row per (mode, task, runner), then the targets."""
    noop, select, rounds = BACKEND_TASKS
    lines = [
        "## ThreadPoolBackend, django-tasks-local and submit()",
        "",
        f"{noop:,} no-op and {select:,} `SELECT 1` tasks, 8 workers each, all in one process",
        "(Python 3.13 + Django 6.1, .venv/bench-durable), runners in rotating order for",
        f"{rounds} rounds: wall time from the first enqueue until every result is recorded",
        "(a Future done, for submit()). Ratios are per round, median (min-max).",
        "django-tasks-local sends no task_started/task_finished signal and never closes",
        "its workers' connections; Django's own receivers of those signals log every",
        "task's start and finish at INFO on django.tasks (the WARNING row shows their cost).",
        "",
        "| connections | task | runner | s per round | µs per task | vs submit() "
        "| vs django-tasks-local |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    skipped = [r for r in rows if "skipped" in r]
    measured = {(r["mode"], r["task"], r["variant"]): r for r in rows if "skipped" not in r}
    for (mode, task, variant), r in measured.items():
        lines.append(
            f"| {BACKEND_MODES[mode]} | {'no-op' if task == 'noop' else 'SELECT 1'} | "
            f"{BACKEND_LABELS[variant]} | {r['elapsed_s']} | {r['us_per_task']} | "
            f"{_spread(r, 'submit')} | {_spread(r, 'local')} |"
        )
    lines.append("")
    if skipped:
        lines.append(f"django-tasks-local rows skipped: {skipped[0]['skipped']}.")
    backend = measured.get(("close", "noop", "backend"))
    local = measured.get(("close", "noop", "local"))
    if backend is not None and local is not None:
        met = "met" if backend["ratio_to_local"] <= 1 else "MISSED"
        lines.append(
            f"Target: {noop:,} no-op tasks on ThreadPoolBackend at least as fast as "
            f"django-tasks-local: {backend['elapsed_s']} s against {local['elapsed_s']} s, "
            f"{_spread(backend, 'local')} ({met})."
        )
    if backend is not None:
        met = "met" if backend["ratio_to_submit"] <= 2 else "MISSED"
        lines.append(
            f"Target: a no-op backend task <= 2x a no-op submit(): "
            f"{_spread(backend, 'submit')} ({met})."
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# djthreads benchmarks",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, Django "
        f"{m['django']}, PostgreSQL {m['postgresql']} on loopback; {m['date']}; "
        f"load average at start {m['load_at_start']:.2f}"
        + (" (QUICK run: counts shrunk, not for quoting)." if m["quick"] else "."),
        "Command: `make bench`. Medians over repeated rounds; ratios are to the raw",
        "`ThreadPoolExecutor(8)` figure of the same round, with the spread across",
        "rounds in brackets. djthreads runs with `ON_COMMIT=False` here (the",
        "submitter is in no transaction; with it on, each submit also reads",
        "`connections['default'].in_atomic_block`, about 1 µs). Before each overhead",
        "mode PostgreSQL is checkpointed and its autovacuum left to finish (waited "
        + ", ".join(f"{s:g}" for s in m.get("pg_settle_s", []))
        + " s).",
        "",
        "## Per-task overhead (8 workers; wall time / tasks)",
        "",
        "| driver / connections | task | raw pool µs | djthreads µs | ratio (min-max) | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    names = {
        "close": "psycopg2, close after each task (default)",
        "reuse": "psycopg2, REUSE_CONNECTIONS",
        "pool": "psycopg 3 + Django pool",
    }
    by = {(r["mode"], r["task"], r["variant"]): r for r in results["overhead"]}
    for mode in ("close", "reuse", "pool"):
        for task in ("noop", "select1"):
            raw, dj = by[(mode, task, "raw")], by[(mode, task, "djthreads")]
            target = ""
            if task == "noop":
                target = "<= 1.5x"
            elif mode in ("pool", "reuse"):
                target = "<= 1.3x"
            task_name = "no-op" if task == "noop" else "SELECT 1"
            lines.append(
                f"| {names[mode]} | {task_name} | {raw['us_per_task']} | "
                f"{dj['us_per_task']} | {dj['ratio']}x ({dj.get('ratio_min', '?')}-"
                f"{dj.get('ratio_max', '?')}) | {target} |"
            )
            cycle = by.get((mode, task, "raw-cycle"))
            if cycle is not None and task == "select1":
                lines.append(
                    f"| {names[mode]}: floor = raw pool giving each connection back "
                    f"(Django's cycle) | {task_name} | {raw['us_per_task']} | "
                    f"{cycle['us_per_task']} | {cycle['ratio']}x ({cycle['ratio_min']}-"
                    f"{cycle['ratio_max']}) | djthreads / this floor: "
                    f"{round(dj['us_per_task'] / cycle['us_per_task'], 2)}x |"
                )
    lines += [
        "",
        f"## I/O-bound scaling: N={N} tasks of one query + {LATENCY_MS} ms wait",
        "",
        "Efficiency = ideal ceil(N/W)·L / elapsed (target >= 0.95 at 32 workers);",
        f"median of {SCALING_ROUNDS} processes at 16 and 32 workers (run round-robin",
        "over the rows, spread in brackets), one below.",
        "Cold: the first batch of a fresh process (threads and connections made on",
        "the way); warm: a second batch in the same process, as in a long-running",
        "one (multiprocessing forks anew for every batch). Peak memory is PSS summed",
        "over the process and its children; 'open after' counts server connections",
        "still open once the run returned (djthreads: after its pool's shutdown;",
        "Django's psycopg 3 pool keeps its connections by design; the raw floors",
        "leave theirs to the garbage collector). Rows marked warm_up() started and",
        "connected the pool's threads before the first batch, outside the timing, as",
        "a server does at startup (`get_executor().warm_up(databases=['default'])`,",
        "which then also runs the full garbage collection the first batch would",
        "otherwise pay); the warmed raw floors got the same threads and",
        "connections, not that collection. The floors are the stdlib pool with",
        "none of djthreads' guarantees: connections never closed, or given back to",
        "Django's pool after each task (`close_old_connections()`).",
        "",
        "| approach | workers | elapsed s (cold) | efficiency (cold) | efficiency (warm) "
        "| peak connections | open after | peak memory MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["scaling"]:
        cold = _with_spread(r, "efficiency")
        warm = _with_spread(r, "warm_efficiency") or "-"
        lines.append(
            f"| {r['label']} | {r['workers']} | {r['elapsed_s']} | {cold} | "
            f"{warm} | {r['peak_connections']} | {r['open_after']} | {r['peak_pss_mib']} |"
        )
    mem = results["memory"]
    lines += [
        "",
        "## Memory over bounded submissions",
        "",
        f"{mem['tasks']:,} no-op `djthreads.submit` calls through MAX_QUEUE=1000 "
        f"(ON_FULL='block') in {mem['elapsed_s']} s: RSS {mem['rss_min_mib']}-"
        f"{mem['rss_max_mib']} MiB after the first sample, growth "
        f"{mem['growth_mib']} MiB (target <= 20 MB).",
        "",
        "## In-process alternative: huey",
        "",
    ]
    huey = results.get("huey", [])
    if huey and "skipped" in huey[0]:
        lines.append(f"Skipped: {huey[0]['skipped']}.")
    elif huey:
        lines += [
            "No-op tasks, 8 thread workers each; huey on its own redis-server on",
            "127.0.0.1. Latency: 1,000 tasks enqueued one at a time; throughput:"
            f" {huey[0]['tasks']:,} enqueued in a burst.",
            "",
            "| runner | enqueue-to-start p50 ms | p99 ms | tasks/s |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['runner']} | {r['p50_ms']} | {r['p99_ms']} | {r['tasks_per_s']:,} |"
            for r in huey
        ]
    if "durable" in results:
        lines += ["", *durable_markdown(results["durable"])]
    if "backend" in results:
        lines += ["", *backend_markdown(results["backend"])]
    lines += [
        "",
        "![benchmarks](results.png)",
        "",
    ]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, ratios = [], []
    short = {"close": "pg2 close", "reuse": "pg2 reuse", "pool": "pg3 pool"}
    for r in results["overhead"]:
        if r["variant"] == "djthreads":
            labels.append(f"{short[r['mode']]}\n{'no-op' if r['task'] == 'noop' else 'SELECT 1'}")
            ratios.append(r["ratio"])
    left.bar(range(len(ratios)), ratios, color="#4477aa")
    left.set_yscale("log")
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_xticks(range(len(labels)), labels, fontsize=8)
    left.set_ylabel("djthreads / raw ThreadPoolExecutor (log)")
    left.set_title("Per-task overhead, ratio to the raw pool")
    for x, ratio in enumerate(ratios):
        left.annotate(f"{ratio}x", (x, ratio), ha="center", va="bottom", fontsize=8)
    series: dict[str, list[tuple[int, float, float | None]]] = {}
    for r in results["scaling"]:
        point = (r["workers"], r["efficiency"], r["warm_efficiency"])
        series.setdefault(r["label"], []).append(point)
    for label, points in series.items():
        points.sort()
        (line,) = right.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", label=label
        )
        warm = [(p[0], p[2]) for p in points if p[2] is not None]
        if warm:
            right.plot(
                [w[0] for w in warm],
                [w[1] for w in warm],
                marker=".",
                linestyle=":",
                color=line.get_color(),
            )
    right.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    right.set_xscale("log", base=2)
    right.set_xticks(WORKERS, [str(w) for w in WORKERS])
    right.set_ylim(0, 1.05)
    right.set_xlabel("workers")
    right.set_ylabel("efficiency (ideal / elapsed)")
    # From the results, not this run's constants: the docs redraw a saved run.
    first = results["scaling"][0]
    right.set_title(f"N={first['n']} tasks of 1 query + {first['latency_ms']:g} ms (dotted: warm)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    if "--only-backend" in sys.argv:
        print("\n".join(backend_markdown(collect_backend())))
        return
    if "--only-durable" in sys.argv:
        # Just this section (the other figures need a quiet machine for long).
        print("\n".join(durable_markdown(collect_durable())))
        return
    started = time.monotonic()
    results = collect()
    results["machine"]["duration_s"] = round(time.monotonic() - started)
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (HERE / "results.md").write_text(markdown(results))
    chart(results, HERE / "results.png")
    print((HERE / "results.md").read_text())
    print(f"benchmarks took {results['machine']['duration_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
