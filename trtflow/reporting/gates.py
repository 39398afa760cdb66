"""Gate verdicts: what the checking stages decided, read back from their JSON reports.

In the workflow the checks (``check_parity``, ``check_int8_accuracy``) write their verdict
(``ok`` and the ``failures`` that made it false) and succeed; ``check_gates`` then fails the run
on a false verdict, after the summary and the report that show it are written. So one failed
gate never hides the results of the others (README "Report").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import read_json, write_json

#: results/<stage>/... -> the gate's name in the summary and the report.
GATE_STAGES = {"parity": "parity", "int8_gate": "int8", "parity_engine": "engine parity"}
#: How to act on a failed gate, per gate.
GATE_FIXES = {
    "parity": "inspect the patch recipe, or loosen parity.atol/parity.rtol if the drift is "
    "expected",
    "int8": "calibrate on more/representative images (calibration.count, calibration.images), "
    "try int8.method entropy/percentile, or keep more nodes float (int8.float_nodes)",
    "engine parity": "inspect the engine's precision and the target's TensorRT version, or "
    "loosen engine.parity.tolerance",
}


def where(path: str | Path) -> tuple[str, list[str]]:
    """(stage, wildcards) of results/<stage>/<w1>/.../<name>.<ext>: the last one is <name>
    (results/saved_model/m/640.manifest.json -> ("saved_model", ["m", "640"]))."""
    parts = Path(path).parts
    i = parts.index("results")
    return parts[i + 1], list(parts[i + 2 : -1]) + [parts[-1].split(".")[0]]


def _reasons(stage: str, report: dict[str, Any]) -> list[str]:
    """Why a verdict is false: the report's own ``failures``, else what its fields say."""
    if report.get("failures"):
        return [str(f) for f in report["failures"]]
    if stage in ("parity", "parity_engine"):
        out = []
        for part in ("raw_vs_tf", "patched_vs_tf", "outputs"):
            for name, e in (report.get(part) or {}).items():
                if isinstance(e, dict) and not e.get("ok", True):
                    out.append(
                        f"{part} {name}: {e.get('mismatched', '?')} elements beyond tolerance "
                        f"(max abs {e.get('max_abs', float('nan')):.3g})"
                    )
        return out or ["verdict false"]
    return ["verdict false"]


#: Report file names that are not a wildcard (results/parity/<model>/<imgsz>/parity.json).
FIXED_NAMES = {"parity", "gate"}


def verdict(path: str | Path) -> dict[str, Any]:
    """One gate's verdict: gate, where (model/imgsz/...), ok, reasons, path."""
    stage, keys = where(path)
    keys = keys[:-1] if keys[-1] in FIXED_NAMES else keys
    report = read_json(path)
    if report.get("skipped"):
        return {"gate": GATE_STAGES.get(stage, stage), "where": "/".join(keys), "ok": True,
                "skipped": str(report["skipped"]), "reasons": [], "path": str(path)}  # fmt: skip
    ok = bool(report.get("ok", True))
    return {
        "gate": GATE_STAGES.get(stage, stage),
        "where": "/".join(keys),
        "ok": ok,
        "reasons": [] if ok else _reasons(stage, report),
        "path": str(path),
    }


def verdicts(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    return [verdict(p) for p in paths]


def failure_lines(paths: Sequence[str | Path]) -> list[str]:
    """One line per failed gate: '<gate> <model>/<imgsz>/...: <reason>; <reason>'."""
    return [
        f"{v['gate']} {v['where']}: " + "; ".join(v["reasons"])
        for v in verdicts(paths)
        if not v["ok"]
    ]


def check_gates(paths: Sequence[str | Path], out_json: str | Path) -> list[dict[str, Any]]:
    """Raise (one line per failed gate and the fix) if any verdict is false, else write
    ``out_json`` with every verdict: the record that all gates passed."""
    found = verdicts(paths)
    failed = [v for v in found if not v["ok"]]
    if failed:
        fixes = dict.fromkeys(GATE_FIXES[v["gate"]] for v in failed if v["gate"] in GATE_FIXES)
        raise TrtflowError(
            f"{len(failed)} of {len(found)} gates failed: "
            + " | ".join(f"{v['gate']} {v['where']}: " + "; ".join(v["reasons"]) for v in failed)
            + " (results/summary.md and the report list them)",
            "; ".join(fixes) or "see the gates' JSON reports",
        )
    write_json(out_json, {"ok": True, "gates": found})
    return found


def describe(paths: Sequence[str | Path]) -> dict[tuple[str, ...], str]:
    """(stage-free wildcards) -> 'parity ok; int8 FAILED' for the summary's gates column."""
    out: dict[tuple[str, ...], list[str]] = {}
    for v in verdicts(paths):
        key = tuple(v["where"].split("/")[:2])
        state = "skipped" if v.get("skipped") else ("ok" if v["ok"] else "FAILED")
        out.setdefault(key, []).append(f"{v['gate']} {state}")
    return {k: "; ".join(v) for k, v in out.items()}
