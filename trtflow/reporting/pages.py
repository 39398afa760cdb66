"""The pages, tables and plots of ``snakemake --report``."""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trtflow.core.manifest import atomic_path, read_json
from trtflow.reporting.gates import verdict, where

log = logging.getLogger(__name__)


CPU_TARGET = "cpu"
#: Zoo table columns: key -> header. A column no row fills is left out of the page.
ZOO_COLUMNS = {
    "model": "model",
    "image_size": "image size",
    "artifact": "artifact",
    "precision": "precision",
    "target": "target",
    "batch": "batch",
    "size_mb": "size MB",
    "accuracy": "mAP@.5 vs fp32",
    "map_vs_labels": "mAP vs labels",
    "p50_ms": "p50 ms",
    "p90_ms": "p90 ms",
    "p99_ms": "p99 ms",
    "speedup": "speed-up vs fp32 ONNX",
    "parity": "parity",
    "gate": "gates",
}
PLOTS = ("latency", "accuracy_vs_latency", "int8_agreement", "build_times")
#: Lists longer than this are shown as '[N values]' on the pages (raw latencies).
MAX_LIST = 16


# ---------------------------------------------------------------- reading what exists
def _read(path: str | Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _num(value: Any, digits: int = 2) -> float | None:
    try:
        return round(float(value), digits)
    except (TypeError, ValueError):
        return None


def _mb(manifest: Mapping[str, Any]) -> float | None:
    size = manifest.get("size_bytes")
    return round(size / 1e6, 2) if isinstance(size, int | float) else None


def _by_key(paths: Iterable[str | Path], n: int = 2) -> dict[tuple[str, ...], list[str]]:
    """First ``n`` wildcards of results/<stage>/<w1>/<w2>/... -> paths."""
    out: dict[tuple[str, ...], list[str]] = {}
    for p in paths:
        out.setdefault(tuple(where(p)[1][:n]), []).append(str(p))
    return out


def _verdict_cell(paths: Sequence[str]) -> tuple[str, str]:
    """(parity cell, gate cell) of a parity/gate report."""
    if not paths:
        return "", ""
    v, r = verdict(paths[0]), _read(paths[0])
    state = "skipped" if v.get("skipped") else ("ok" if v["ok"] else "FAILED")
    detail = f" (max abs {r['max_abs']:.3g})" if isinstance(r.get("max_abs"), float) else ""
    return f"{state}{detail}", f"{v['gate']} {state}"


def _latency(stats: Mapping[str, Any]) -> dict[str, float | None]:
    return {k: _num(stats.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms")}


def zoo_rows(
    patched_manifests: Sequence[str] = (),
    bench: Sequence[str] = (),
    parity: Sequence[str] = (),
    int8_manifests: Sequence[str] = (),
    int8_bench: Sequence[str] = (),
    int8_gate: Sequence[str] = (),
    engine_manifests: Sequence[str] = (),
    engine_bench: Sequence[str] = (),
    engine_parity: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per timed artifact (see the module docstring), sorted by model, size, target."""
    patched = {k: _read(v[0]) for k, v in _by_key(patched_manifests).items()}
    qdq = {k: _read(v[0]) for k, v in _by_key(int8_manifests).items()}
    parity_of, gate_of = _by_key(parity), _by_key(int8_gate)
    onnx_p50: dict[tuple[str, str, int], float] = {}
    rows: list[dict[str, Any]] = []

    for p in bench:
        m = _read(p)
        key = tuple(where(p)[1][:2])
        par, gate = _verdict_cell(parity_of.get(key, []))
        labelled = _read(gate_of[key][0]).get("labelled", {}) if key in gate_of else {}
        row = {"model": key[0], "image_size": int(key[1]), "artifact": "ONNX",
               "precision": "fp32", "target": CPU_TARGET, "batch": m.get("batch"),
               "size_mb": _mb(patched.get(key, {})), "accuracy": 1.0,
               "map_vs_labels": _num(labelled.get("map_fp32"), 3), **_latency(m),
               "speedup": 1.0, "parity": par, "gate": gate, "cpu": m.get("cpu"),
               "sources": [p, *parity_of.get(key, []),
                           *_paths_of(patched_manifests, key)]}  # fmt: skip
        if row["p50_ms"] and isinstance(row["batch"], int):
            onnx_p50[(key[0], key[1], row["batch"])] = row["p50_ms"]
        rows.append(row)

    for p in int8_bench:
        m = _read(p)
        key = tuple(where(p)[1][:2])
        g = _read(gate_of[key][0]) if key in gate_of else {}
        _, gate = _verdict_cell(gate_of.get(key, []))
        comparable = m.get("comparable", True)
        speedup = _num(m.get("speedup")) if comparable else "not comparable (inexact int8 kernels)"
        form = m.get("int8_form")
        rows.append(
            {"model": key[0], "image_size": int(key[1]), "artifact": "ONNX Q/DQ",
             "precision": "int8", "target": CPU_TARGET + (f" ({form} form)" if form else ""),
             "batch": m.get("batch"), "size_mb": _mb(qdq.get(key, {})),
             "accuracy": _num(g.get("map50_vs_fp32"), 3),
             "map_vs_labels": _num((g.get("labelled") or {}).get("map_int8"), 3),
             **_latency((m.get("stats") or {}).get("int8") or {"p50_ms": m.get("int8_p50_ms")}),
             "speedup": speedup, "gate": gate, "cpu": m.get("cpu"),
             "sources": [p, *gate_of.get(key, []), *_paths_of(int8_manifests, key)]}
        )  # fmt: skip

    engine_man = {tuple(where(p)[1]): _read(p) for p in engine_manifests}
    engine_par = {tuple(where(p)[1]): p for p in engine_parity}
    for p in engine_bench:
        m = _read(p)
        key = tuple(where(p)[1])  # target, model, imgsz, precision, profile
        target, model, imgsz, precision, profile = (list(key) + [""] * 5)[:5]
        man = next((v for k, v in engine_man.items() if k[:4] == key[:4] and
                    k[4].startswith(profile)), {})  # fmt: skip
        stats = m.get("host_latency") or m.get("gpu_compute") or m  # or p50_ms etc. at the top
        batch = m.get("batch")
        if m.get("standin"):  # tests/standin: never mistaken for a measurement
            target = f"{target} (TEST STAND-IN: fake timings)"
        row = {"model": model, "image_size": int(imgsz) if imgsz.isdigit() else imgsz, "artifact":
               f"engine {profile}".strip(), "precision": m.get("precision", precision),
               "target": target, "batch": batch, "size_mb": _mb(man),
               "accuracy": _num(m.get("map50_vs_fp32"), 3), **_latency(stats),
               "note": m.get("note", ""), "build_seconds": man.get("build_seconds"),
               "sources": [p]}  # fmt: skip
        if key in engine_par:
            par, gate = _verdict_cell([engine_par[key]])
            row.update(parity=par, gate=gate)
            row["sources"].append(engine_par[key])
        base = onnx_p50.get((model, imgsz, batch)) if isinstance(batch, int) else None
        if base and row["p50_ms"]:
            row["speedup"] = round(base / row["p50_ms"], 2)
        rows.append(row)
    rows.sort(key=lambda r: (str(r["model"]), r["image_size"] or 0, str(r["target"]),
                             str(r["precision"]), r["batch"] or 0))  # fmt: skip
    return rows


def _paths_of(paths: Sequence[str], key: tuple[str, ...]) -> list[str]:
    return [str(p) for p in paths if tuple(where(p)[1][:2]) == key]


def fastest(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per target family (cpu, each TensorRT target) and model/size: the lowest p50 at the
    smallest batch timed there, with what it costs in accuracy against fp32."""
    best: dict[tuple[str, str, Any], Mapping[str, Any]] = {}
    smallest: dict[tuple[str, str, Any], int] = {}
    for r in rows:
        if not isinstance(r.get("p50_ms"), float):
            continue
        family = str(r["target"]).split(" (")[0]
        k = (family, str(r["model"]), r["image_size"])
        b = r["batch"] if isinstance(r["batch"], int) else 1
        if b < smallest.get(k, 1 << 30):
            smallest[k] = b
            best.pop(k, None)
        if b == smallest[k] and (k not in best or r["p50_ms"] < best[k]["p50_ms"]):
            best[k] = r
    out = []
    for (family, _, _), r in sorted(best.items(), key=lambda kv: kv[0]):
        if r["precision"] == "fp32" and r["artifact"] == "ONNX":
            cost = "none (the fp32 reference)"
        elif isinstance(r.get("accuracy"), float):
            cost = f"mAP@.5 vs fp32 {r['accuracy']:.3f} (1 = same detections)"
        else:
            cost = "not measured"
        if isinstance(r.get("map_vs_labels"), float):
            cost += f"; mAP vs labels {r['map_vs_labels']:.3f}"
        out.append({"target": family, "model": r["model"], "image_size": r["image_size"],
                    "fastest": f"{r['artifact']} {r['precision']}", "batch": r["batch"],
                    "p50_ms": r["p50_ms"], "speedup": r.get("speedup", ""),
                    "accuracy cost": cost})  # fmt: skip
    return out


# ---------------------------------------------------------------- failures
def failures(
    gate_reports: Sequence[str] = (), missing: Mapping[str, str] | None = None, tail: int = 6
) -> list[dict[str, str]]:
    """What failed and why: every false gate verdict (its reasons), then every expected result
    that does not exist (a failed job's log's last lines, or 'not run')."""
    out = []
    for p in gate_reports:
        v = verdict(p)
        if not v["ok"]:
            out.append({"what": f"{v['gate']} gate {v['where']}", "why": "; ".join(v["reasons"]),
                        "where": v["path"]})  # fmt: skip
    for artifact, log_path in (missing or {}).items():
        lines = _tail(log_path, tail)
        why = "\n".join(lines) if lines else "not run (no log): run its target first"
        out.append({"what": f"missing {artifact}", "why": why, "where": log_path})
    return out


def _tail(path: str | Path, n: int) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


# ---------------------------------------------------------------- plots (matplotlib, Agg)
def _figure(height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, max(2.4, height)), dpi=90)
    return plt, fig, ax


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555")
    ax.set_axis_off()


def _save(plt, fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _label(r: Mapping[str, Any]) -> str:
    what = f"{r['artifact']} {r['precision']}"
    return f"{r['model']}@{r['image_size']} {what} · {r['target']} · b{r['batch']}"


COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


def _colors(keys: Iterable[str]) -> dict[str, str]:
    return {k: COLORS[i % len(COLORS)] for i, k in enumerate(dict.fromkeys(keys))}


def plot_latency(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """p50 bar per (model, artifact, precision, target, batch), p90 and p99 as ticks."""
    timed = [r for r in rows if isinstance(r.get("p50_ms"), float)]
    plt, fig, ax = _figure(0.8 + 0.32 * len(timed))
    if not timed:
        _empty(ax, "no latency measured yet")
    else:
        color = _colors(f"{r['target']} {r['precision']}" for r in timed)
        y = list(range(len(timed)))[::-1]
        for yi, r in zip(y, timed, strict=True):
            c = color[f"{r['target']} {r['precision']}"]
            ax.barh(yi, r["p50_ms"], color=c, height=0.7)
            for k, m in (("p90_ms", "|"), ("p99_ms", "x")):
                if isinstance(r.get(k), float):
                    ax.plot(r[k], yi, m, color="black", ms=6)
            end = max(v for v in (r["p50_ms"], r.get("p90_ms"), r.get("p99_ms")) if v)
            ax.text(end, yi, f"  p50 {r['p50_ms']:.2f}", va="center", fontsize=8)
        ax.set_yticks(y, [_label(r) for r in timed], fontsize=8)
        ax.set_xlabel("latency ms (bar p50, | p90, x p99; engines: host latency)")
        ax.set_title("Latency per model x precision x target and batch")
        ax.grid(axis="x", alpha=0.3)
    _save(plt, fig, path)


def plot_accuracy_vs_latency(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Accuracy against fp32 (fp32 = 1) over p50, one point per timed artifact."""
    pts = [r for r in rows if isinstance(r.get("p50_ms"), float)
           and isinstance(r.get("accuracy"), float)]  # fmt: skip
    plt, fig, ax = _figure(4.2)
    if not pts:
        _empty(ax, "no artifact has both a latency and an accuracy yet")
    else:
        color = _colors(str(r["target"]).split(" (")[0] for r in pts)
        marker = {"fp32": "o", "fp16": "s", "int8": "^", "best": "D"}
        seen = set()
        for r in pts:
            fam = str(r["target"]).split(" (")[0]
            lab = f"{fam} {r['precision']}"
            ax.scatter(r["p50_ms"], r["accuracy"], color=color[fam], s=50,
                       marker=marker.get(str(r["precision"]), "o"),
                       label=None if lab in seen else lab)  # fmt: skip
            seen.add(lab)
            ax.annotate(f"{r['model']}@{r['image_size']} b{r['batch']}",
                        (r["p50_ms"], r["accuracy"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")  # fmt: skip
        ax.set_xlabel("p50 latency ms")
        ax.set_ylabel("mAP@.5 vs fp32 detections")
        ax.set_ylim(min(0.0, min(r["accuracy"] for r in pts)), 1.08)
        ax.set_title("Accuracy vs latency (up and left is better)")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    _save(plt, fig, path)


def plot_int8_agreement(gate_reports: Sequence[str], path: str | Path) -> None:
    """Per model: INT8 vs fp32 mAP@.5, mAP@.5:.95 and recall@.5, with the gate's floor."""
    gates = [(where(p)[1], _read(p)) for p in gate_reports]
    plt, fig, ax = _figure(0.9 + 0.55 * len(gates))
    if not gates:
        _empty(ax, "INT8 stage not run (int8.enabled: false)")
    else:
        metrics = (("map50_vs_fp32", "mAP@.5"), ("map_vs_fp32", "mAP@.5:.95"),
                   ("recall50_vs_fp32", "recall@.5"))  # fmt: skip
        h = 0.8 / len(metrics)
        for i, (key, name) in enumerate(metrics):
            ys = [len(gates) - 1 - j + (1 - i) * h for j in range(len(gates))]
            vals = [_num(g.get(key), 4) or 0.0 for _, g in gates]
            ax.barh(ys, vals, height=h, color=COLORS[i], label=name)
        floors = {g.get("min_map50_vs_fp32") for _, g in gates} - {None}
        for f in floors:
            ax.axvline(f, color="#c44e52", ls="--", label=f"gate floor mAP@.5 {f}")
        ax.set_yticks(range(len(gates))[::-1],
                      [f"{k[0]}@{k[1]} ({'ok' if g.get('ok', True) else 'FAILED'})"
                       for k, g in gates])  # fmt: skip
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("agreement of INT8 detections with fp32's (1 = identical)")
        ax.set_title("INT8 agreement with fp32 (held-aside images)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(plt, fig, path)


def build_times(manifests: Sequence[str]) -> dict[str, dict[str, float]]:
    """model@imgsz -> stage -> seconds, from the manifests' wall times (engine builds by
    target/precision/profile)."""
    out: dict[str, dict[str, float]] = {}
    for p in manifests:
        m = _read(p)
        stage, keys = where(p)
        if stage == "engine" and len(keys) >= 5:
            who, what = f"{keys[1]}@{keys[2]}", f"engine {keys[0]} {keys[3]}"
            secs = m.get("build_seconds", m.get("seconds"))
        else:
            who, what, secs = f"{keys[0]}@{keys[1]}", m.get("stage", stage), m.get("seconds")
        if isinstance(secs, int | float):
            out.setdefault(who, {})[what] = out.get(who, {}).get(what, 0.0) + float(secs)
    return out


def plot_build_times(manifests: Sequence[str], path: str | Path) -> None:
    times = build_times(manifests)
    plt, fig, ax = _figure(0.9 + 0.5 * len(times))
    if not times:
        _empty(ax, "no manifest with a wall time yet")
    else:
        stages = list(dict.fromkeys(s for t in times.values() for s in t))
        color = _colors(stages)
        names = sorted(times)
        left = [0.0] * len(names)
        for s in stages:
            vals = [times[n].get(s, 0.0) for n in names]
            ax.barh(names, vals, left=left, color=color[s], label=s)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel("seconds (manifests' wall time per stage)")
        ax.set_title("Build times per model and stage")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(plt, fig, path)


# ---------------------------------------------------------------- pages
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2em;color:#1f2328}
h1{font-size:1.5em;margin:.2em 0} h2{font-size:1.15em;margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:13px;margin:.3em 0}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f0f3f6} td:nth-child(-n+5){text-align:left}
tr:nth-child(even) td{background:#f8f9fb} .bad{color:#b31d28;font-weight:600}
.ok{color:#1a7f37} .box{border:1px solid #d0d7de;border-radius:6px;padding:.5em .9em;
margin:.5em 0} .fail{border-color:#b31d28;background:#fff5f5} pre{font-size:11px;
white-space:pre-wrap;max-width:110ch;margin:.2em 0} details summary{cursor:pointer;color:#0969da}
img{max-width:100%;border:1px solid #eee} td details{font-size:11px;white-space:nowrap}
.muted{color:#656d76;font-size:12px}
"""


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "<td></td>"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 0.01 else f"{value:,.2f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    cls = ' class="bad"' if "FAILED" in text else (' class="ok"' if text.endswith(" ok") or
                                                   text.startswith("ok") else "")  # fmt: skip
    return f"<td{cls}>{html.escape(text)}</td>"


def _trim(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _trim(v) for k, v in data.items()}
    if isinstance(data, list) and len(data) > MAX_LIST:
        return f"[{len(data)} values]"
    return [_trim(v) for v in data] if isinstance(data, list) else data


def _json_details(paths: Iterable[str]) -> str:
    """Each file's content, one click away (a collapsed <details>)."""
    parts = []
    for p in dict.fromkeys(paths):
        body = html.escape(json.dumps(_trim(_read(p)), indent=1, default=str))
        parts.append(f'<details><summary title="{html.escape(str(p))}">'
                     f"{html.escape(_short(p))}</summary><pre>{body}</pre></details>")  # fmt: skip
    return "".join(parts)


def _short(path: str | Path) -> str:
    """results/<stage>/.../<file> -> '<stage>/<file>' (the full path is the tooltip)."""
    stage, _ = where(path)
    return f"{stage}/{Path(path).name}"


def table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str],
          details: bool = False) -> str:  # fmt: skip
    """An HTML table of the columns some row fills (plus the row's files, when asked)."""
    cols = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    head = "".join(f"<th>{html.escape(columns[c])}</th>" for c in cols)
    if details:
        head += "<th>manifests and reports</th>"
    body = []
    for r in rows:
        cells = "".join(_cell(r.get(c)) for c in cols)
        if details:
            cells += f'<td style="text-align:left">{_json_details(r.get("sources", []))}</td>'
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>\n")  # fmt: skip


def _failures_html(fails: Sequence[Mapping[str, str]]) -> str:
    if not fails:
        return '<div class="box ok">Every job of this report ran and every gate passed.</div>'
    items = "".join(
        f"<li><b>{html.escape(f['what'])}</b>: <pre>{html.escape(f['why'])}</pre>"
        f"<span class=muted>{html.escape(f['where'])}</span></li>"
        for f in fails
    )
    return f'<div class="box fail"><b class=bad>{len(fails)} failed</b><ul>{items}</ul></div>'


def summary_table(summary_csv: str | Path | None) -> tuple[list[dict[str, str]], list[str]]:
    """results/summary.csv as rows and its header (whatever columns it has)."""
    if not summary_csv or not Path(summary_csv).is_file():
        return [], []
    with open(summary_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader), list(reader.fieldnames or [])


def _cpu(row: Mapping[str, Any]) -> str:
    from trtflow.core.cpu import cpu_label

    try:
        return cpu_label(row["cpu"])
    except (KeyError, TypeError):
        return ""


def _pages(folder, rows, manifests, key, name: str, title: str) -> None:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    for k in {tuple(where(p)[1][:2]) for p in manifests}:
        groups.setdefault(k, [])
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for k, group in sorted(groups.items()):
            files = [p for p in manifests if tuple(where(p)[1][:2]) == k]
            files += [s for r in group for s in r.get("sources", [])]
            body = table(group, ZOO_COLUMNS) + "<h2>Manifests and reports</h2>"
            out = tmp / name.format(*k)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(_page(title.format(*k), body + _json_details(files)), "utf-8")
