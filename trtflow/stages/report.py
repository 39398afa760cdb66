"""Stages of rules/report.smk: the summary tables, engine summary, report pages and the gates."""

from __future__ import annotations

import csv
import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trtflow.core.manifest import atomic_path
from trtflow.reporting import gates
from trtflow.reporting.gates import failure_lines
from trtflow.reporting.pages import (
    PLOTS,
    ZOO_COLUMNS,
    _cpu,
    _failures_html,
    _img,
    _page,
    _pages,
    failures,
    fastest,
    plot_accuracy_vs_latency,
    plot_build_times,
    plot_int8_agreement,
    plot_latency,
    summary_table,
    table,
    zoo_rows,
)
from trtflow.reporting.summary import (
    COLUMNS,
    ENGINE_COLUMNS,
    collect_engine_rows,
    collect_rows,
    markdown_table,
)

log = logging.getLogger(__name__)


def render_summary(
    csv_path: str | Path,
    md_path: str | Path,
    pb_manifests: Sequence[str] = (),
    raw_manifests: Sequence[str] = (),
    patched_manifests: Sequence[str] = (),
    parity: Sequence[str] = (),
    bench: Sequence[str] = (),
    int8_bench: Sequence[str] = (),
    int8_gate: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Write ``results/summary.csv`` and ``.md``: one row per model and image size."""
    manifests = {"pb_manifests": pb_manifests, "raw_manifests": raw_manifests,
                 "patched_manifests": patched_manifests, "parity": parity, "bench": bench,
                 "int8_bench": int8_bench, "int8_gate": int8_gate}  # fmt: skip
    rows = collect_rows(**manifests)
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    failed = failure_lines([*manifests.get("parity", ()), *manifests.get("int8_gate", ())])
    with atomic_path(md_path) as tmp:
        tmp.write_text(
            "# trtflow summary\n\n"
            + markdown_table(rows)
            + ("\n## Failed gates\n\n" + "".join(f"- {f}\n" for f in failed) if failed else "")
        )
    return rows


def render_engine_summary(
    csv_path: str | Path,
    md_path: str | Path,
    manifests: Sequence[str] = (),
    bench: Sequence[str] = (),
    parity: Sequence[str] = (),
    not_run: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Write ``results/engine_summary.csv`` and ``.md``: one row per engine (``not_run``:
    target -> why its engines did not run here)."""
    rows = collect_engine_rows(manifests, bench, parity, dict(not_run or {}))
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=ENGINE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(md_path) as tmp:
        tmp.write_text("# trtflow engines\n\n" + markdown_table(rows, ENGINE_COLUMNS))
    return rows


def render_report(
    zoo_html: str | Path,
    plots: Mapping[str, str | Path],
    models_dir: str | Path,
    targets_dir: str | Path,
    summary_csv: str | Path | None = None,
    manifests: Sequence[str] = (),
    missing: Mapping[str, str] | None = None,
    patched_manifests: Sequence[str] = (),
    parity: Sequence[str] = (),
    bench: Sequence[str] = (),
    int8_manifests: Sequence[str] = (),
    int8_bench: Sequence[str] = (),
    int8_gate: Sequence[str] = (),
    engine_manifests: Sequence[str] = (),
    engine_bench: Sequence[str] = (),
    engine_parity: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Write the plots, the zoo page and one page per model/size and per target.

    The result lists are those of zoo_rows; ``manifests`` every manifest to time and
    link; ``missing`` expected results that do not exist -> the log of the job that makes them;
    ``plots`` plot name -> PNG path.
    """
    results = {"patched_manifests": patched_manifests, "parity": parity, "bench": bench,
               "int8_manifests": int8_manifests, "int8_bench": int8_bench, "int8_gate": int8_gate,
               "engine_manifests": engine_manifests, "engine_bench": engine_bench,
               "engine_parity": engine_parity}  # fmt: skip
    rows = zoo_rows(**results)
    gate_reports = [*results.get("parity", ()), *results.get("int8_gate", ()),
                    *results.get("engine_parity", ())]  # fmt: skip
    fails = failures(gate_reports, missing)
    plot_latency(rows, plots["latency"])
    plot_accuracy_vs_latency(rows, plots["accuracy_vs_latency"])
    plot_int8_agreement(results.get("int8_gate", ()), plots["int8_agreement"])
    timed = ("int8_manifests", "engine_manifests")
    plot_build_times([*manifests, *(p for k in timed for p in results.get(k, ()))],
                     plots["build_times"])  # fmt: skip

    summary, header = summary_table(summary_csv)
    cpus = sorted({str(_cpu(r)) for r in rows if r.get("cpu")})
    fastest_cols = {k: k for k in ("target", "model", "image_size", "fastest", "batch",
                                   "p50_ms", "speedup", "accuracy cost")}  # fmt: skip
    fastest_cols |= {"image_size": "image size", "p50_ms": "p50 ms",
                     "speedup": "speed-up vs fp32 ONNX"}  # fmt: skip
    body = [
        _failures_html(fails),
        "<h2>Fastest artifact per target and model, and what it costs in accuracy</h2>",
        table(fastest(rows), fastest_cols),
        "<p class=muted>At the smallest batch timed on each target. cpu = ONNX Runtime on "
        f"{html.escape('; '.join(cpus) or 'this CPU')}; engine latency is trtexec's host latency "
        "(GPU compute is in the benchmark report). Speed-ups of the INT8 CPU rows are fp32/INT8 "
        "timed in one job; of engines, the fp32 ONNX CPU p50 at the same batch over the engine's."
        "</p>",
        "<h2>Zoo</h2>",
        table(rows, ZOO_COLUMNS, details=True),
        "<h2>Plots</h2>",
        *(_img(plots[k], k) for k in PLOTS),
    ]
    if summary:
        body += ["<h2>results/summary.csv</h2>", table(summary, {c: c for c in header})]
    with atomic_path(zoo_html) as tmp:
        tmp.write_text(_page("trtflow zoo report", "".join(body)), encoding="utf-8")

    _pages(models_dir, rows, manifests, lambda r: (str(r["model"]), str(r["image_size"])),
           "{0}/{1}.html", "model {0} at {1}")  # fmt: skip
    _pages(targets_dir, rows, (), lambda r: (str(r["target"]).split(" (")[0],),
           "{0}.html", "target {0}")  # fmt: skip
    log.info("report: %d zoo rows, %d failures, %d models", len(rows), len(fails),
             len({(r["model"], r["image_size"]) for r in rows}))  # fmt: skip
    return rows


def check_gates(paths: list[str], out_json: str | Path) -> list[dict]:
    """Rule check_gates: fail the run (one line per failed gate, of the parity and INT8 gate
    reports ``paths``) after summary and report exist."""
    return gates.check_gates(paths, out_json)
