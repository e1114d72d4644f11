"""Sphinx extension of the djthreads docs: the benchmarks page, generated.

``make bench`` writes ``benchmarks/results.json``; this extension turns that
file into the benchmarks page's tables (the ``benchmark-table`` directive),
its inline figures (MyST substitutions named ``bench_*``) and its chart (drawn
at build time by ``chart()`` of ``benchmarks/run.py`` into ``docs/_generated``),
so the page always shows the last saved run and nothing is copied by hand.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util.docutils import SphinxDirective

DOCS = Path(__file__).resolve().parent.parent
BENCHMARKS = DOCS.parent / "benchmarks"
RESULTS = BENCHMARKS / "results.json"
CHART = DOCS / "_generated" / "benchmarks.png"

MODES = {
    "close": "psycopg2, close after each task (default)",
    "reuse": "psycopg2, `REUSE_CONNECTIONS`",
    "pool": "psycopg 3 + Django's pool",
}
TASKS = {"noop": "no-op", "select1": "`SELECT 1`"}
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"


def load() -> dict[str, Any]:
    results: dict[str, Any] = json.loads(RESULTS.read_text())
    return results


def _overhead(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["mode"], r["task"], r["variant"]): r for r in results["overhead"]}


def _table(header: list[str], align: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def overhead_table(results: dict[str, Any]) -> list[str]:
    by = _overhead(results)
    rows: list[list[object]] = []
    for mode, mode_name in MODES.items():
        for task, task_name in TASKS.items():
            raw, dj = by[(mode, task, "raw")], by[(mode, task, "djthreads")]
            rows.append(
                [
                    mode_name,
                    task_name,
                    raw["us_per_task"],
                    dj["us_per_task"],
                    f"{dj['ratio']}{TIMES}"
                    + (f" ({dj['ratio_min']}-{dj['ratio_max']})" if "ratio_min" in dj else ""),
                ]
            )
            cycle = by.get((mode, task, "raw-cycle"))
            if cycle is not None and task == "select1":
                # The pool's own floor: a raw pool handing each connection back.
                rows.append(
                    [
                        f"{mode_name}, floor: raw pool giving each connection back",
                        task_name,
                        raw["us_per_task"],
                        cycle["us_per_task"],
                        f"{cycle['ratio']}{TIMES} ({cycle['ratio_min']}-{cycle['ratio_max']});"
                        f" djthreads / floor "
                        f"{round(dj['us_per_task'] / cycle['us_per_task'], 2)}{TIMES}",
                    ]
                )
    header = ["driver / connections", "task", "raw pool µs", "djthreads µs", "ratio (spread)"]
    return _table(header, ["---", "---", "---:", "---:", "---:"], rows)


def scaling_table(results: dict[str, Any]) -> list[str]:
    with_spread = _bench_run()._with_spread  # a figure and its spread, as results.md
    rows: list[list[object]] = []
    for r in results["scaling"]:
        rows.append(
            [
                r["label"],
                r["workers"],
                r["elapsed_s"],
                with_spread(r, "efficiency"),
                with_spread(r, "warm_efficiency") or DASH,
                r["peak_connections"],
                r["open_after"],
                r["peak_pss_mib"],
            ]
        )
    header = [
        "approach",
        "workers",
        "elapsed s (cold)",
        "efficiency cold",
        "warm",
        "peak server connections",
        "open after",
        "peak memory MiB",
    ]
    return _table(header, ["---", *["---:"] * 7], rows)


def huey_table(results: dict[str, Any]) -> list[str]:
    huey = results.get("huey") or []
    if not huey or "skipped" in huey[0]:
        reason = huey[0]["skipped"] if huey else "not in this run"
        return [f"The huey comparison was skipped in this run: {reason}."]
    rows: list[list[object]] = [
        [r["runner"], r["p50_ms"], r["p99_ms"], f"{r['tasks_per_s']:,}"] for r in huey
    ]
    header = ["runner", "submit-to-start p50 ms", "p99 ms", "tasks/s"]
    return _table(header, ["---", "---:", "---:", "---:"], rows)


def _bench_run() -> Any:
    # benchmarks/run.py itself: its chart and its backend section, fed saved results.
    spec = importlib.util.spec_from_file_location("_djthreads_bench_run", BENCHMARKS / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backend_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("backend")
    if not rows:
        return ["The ThreadPoolBackend comparison is not in this run."]
    lines: list[str] = _bench_run().backend_markdown(rows)
    return lines[2:]  # without its own heading: the page has one


TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "overhead": overhead_table,
    "scaling": scaling_table,
    "huey": huey_table,
    "backend": backend_table,
}


def substitutions(results: dict[str, Any]) -> dict[str, str]:
    """The figures the page quotes in its prose, from the same run as its tables."""
    m = results["machine"]
    by = _overhead(results)
    first = results["scaling"][0]
    mem = results["memory"]

    def cost(mode: str, task: str) -> float:
        return float(by[(mode, task, "djthreads")]["us_per_task"]) - float(
            by[(mode, task, "raw")]["us_per_task"]
        )

    noop = [float(by[(mode, "noop", "djthreads")]["ratio"]) for mode in MODES]
    repeated = sorted({r["workers"] for r in results["scaling"] if r["rounds"] > 1})
    rounds = max(r["rounds"] for r in results["scaling"])
    return {
        "bench_machine": (
            f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, Django {m['django']}, "
            f"PostgreSQL {m['postgresql']} on loopback, {m['date']}, load average "
            f"{m['load_at_start']:.1f} at start"
            + (" (a --quick run: counts shrunk, not for quoting)" if m.get("quick") else "")
        ),
        "bench_duration_min": f"{round(m.get('duration_s', 0) / 60)}",
        "bench_close_ms": f"{cost('close', 'select1') / 1000:.1f}",
        "bench_reuse_ratio": f"{by[('reuse', 'select1', 'djthreads')]['ratio']}{TIMES}",
        "bench_pool_ratio": f"{by[('pool', 'select1', 'djthreads')]['ratio']}{TIMES}",
        "bench_noop_ratio": f"{min(noop):.2f}{DASH}{max(noop):.2f}{TIMES}",
        "bench_n": f"{first['n']}",
        "bench_latency_ms": f"{first['latency_ms']:g}",
        "bench_overhead_rounds": f"{results['overhead'][0]['rounds']}",
        "bench_scaling_medians": (
            f"At {' and '.join(map(str, repeated))} workers each figure is the median of "
            f"{rounds} processes."
            if repeated
            else "Each figure comes from one process."
        ),
        "bench_memory_tasks": f"{mem['tasks']:,}",
        "bench_memory_s": f"{mem['elapsed_s']}",
        "bench_memory_rss": f"{mem['rss_min_mib']}{DASH}{mem['rss_max_mib']}",
        "bench_memory_growth": f"{mem['growth_mib']}",
    }


class BenchmarkTable(SphinxDirective):
    """``{benchmark-table} overhead|scaling|huey|backend``: a table of benchmarks/results.json."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        if name not in TABLES:
            raise self.error(f"benchmark-table takes one of {', '.join(TABLES)}, got {name!r}.")
        self.env.note_dependency(str(RESULTS))
        lines = TABLES[name](load())
        container = nodes.container()
        self.state.nested_parse(StringList(lines, str(RESULTS)), self.content_offset, container)
        return container.children


def _add_substitutions(app: Sphinx, config: Config) -> None:
    config.myst_substitutions = {**config.myst_substitutions, **substitutions(load())}


def _draw_chart(app: Sphinx) -> None:
    # The chart of benchmarks/run.py itself, fed the saved results; redrawn
    # only when results.json is newer than the last drawing.
    if CHART.exists() and CHART.stat().st_mtime >= RESULTS.stat().st_mtime:
        return
    CHART.parent.mkdir(exist_ok=True)
    _bench_run().chart(load(), CHART)


def _paramspec_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    # Sphinx 9 writes ``*args: P.args`` as ``*args: ~typing.~P``, which then
    # fails to parse, and the whole signature is shown as raw text.
    if signature:
        signature = signature.replace("*args: ~typing.~P", "*args: P.args")
        signature = signature.replace("**kwargs: ~typing.~P", "**kwargs: P.kwargs")
    return signature, return_annotation


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("benchmark-table", BenchmarkTable)
    app.connect("autodoc-process-signature", _paramspec_signature)
    app.connect("config-inited", _add_substitutions)
    app.connect("builder-inited", _draw_chart)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
