"""End-to-end: the real workflow on a tiny zoo in a temp dir, then rerun-only-on-change."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, tiny_config, tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import Workdir

    wd = Workdir(tmp_path_factory.mktemp("zoo"))
    cfg = tiny_config(
        {
            "tiny-a": tiny_model(),
            "tiny-b": tiny_model(seed=1, batch=1, classes=3),
        },
        batch_sizes=[1, 2],
    )
    wd.write_config(cfg)
    wd.snakemake()
    return wd, cfg


def test_all_artifacts_and_summary(built):
    wd, _ = built
    r = wd.path / "results"
    for model in ("tiny-a", "tiny-b"):
        for rel in ("pb/{m}/64/model.pb", "onnx/{m}/64/model.onnx", "patched/{m}/64/model.onnx",
                    "parity/{m}/64/parity.json", "benchmark_onnx/{m}/64/b1.json"):  # fmt: skip
            assert (r / rel.format(m=model)).is_file(), rel
        man = json.loads((r / f"patched/{model}/64/model.onnx.manifest.json").read_text())
        assert man["inputs"]["onnx"]["sha256"]
        assert man["command"].startswith("trtflow patch")
        assert man["io"][0]["name"] == "images" and man["io"][0]["shape"][1] == 3
        parity = json.loads((r / f"parity/{model}/64/parity.json").read_text())
        assert parity["ok"] and parity["max_rel"] <= 1e-4
    # dynamic batch model is benchmarked at both batch sizes, the static-batch one only at 1
    assert (r / "benchmark_onnx/tiny-a/64/b2.json").is_file()
    assert not (r / "benchmark_onnx/tiny-b/64/b2.json").exists()
    rows = list(csv.DictReader(open(r / "summary.csv")))
    assert [row["model"] for row in rows] == ["tiny-a", "tiny-b"]
    for row in rows:
        # fold_decode trades tf2onnx's 4 nodes per head + 10 shared decode nodes (3 full copies
        # of [B,N,5+C]) for 10 small nodes per head + 1 Concat: +9 nodes for YOLOv5's 3 heads.
        assert int(row["nodes_patched"]) <= int(row["nodes_raw"]) + 9
        assert float(row["cpu_p50_ms"]) > 0
    assert "| tiny-a | builtin | 64 |" in (r / "summary.md").read_text()
    # every job left a log and a benchmark file
    assert (wd.path / "logs/patch_onnx/tiny-a/64.log").is_file()
    assert (wd.path / "benchmarks/export_pb/tiny-b/64.tsv").is_file()


def test_second_run_does_nothing(built):
    wd, _ = built
    assert wd.planned_jobs() == {}


def test_patch_option_change_reruns_exactly_that_model(built):
    wd, cfg = built
    before = {p: p.stat().st_mtime_ns for p in (wd.path / "results").rglob("*") if p.is_file()}
    cfg["models"]["tiny-b"]["patches"] = ["nchw_input", "fix_batch", "rename_io", "sanitize",
                                          "nearest_resize"]  # fmt: skip
    wd.write_config(cfg)
    assert wd.planned_jobs() == {
        "patch_onnx": 1,
        "check_parity": 1,
        "benchmark_onnx": 1,
        "render_summary": 1,
        "render_report": 1,
        "check_gates": 1,
        "all": 1,
    }
    wd.snakemake()
    changed = {
        str(p.relative_to(wd.path))
        for p in (wd.path / "results").rglob("*")
        if p.is_file() and before.get(p) != p.stat().st_mtime_ns
    }
    assert "results/report/zoo.html" in changed  # the report is one job: all of it is rewritten
    assert {c for c in changed if not c.startswith("results/report/")} == {
        "results/patched/tiny-b/64/model.onnx",
        "results/patched/tiny-b/64/model.onnx.manifest.json",
        "results/parity/tiny-b/64/parity.json",
        "results/benchmark_onnx/tiny-b/64/b1.json",
        "results/summary.csv",
        "results/summary.md",
        "results/gates.json",
    }
    assert wd.planned_jobs() == {}


def _saved_model_values(path) -> list[bytes]:
    """A SavedModel's variable values, sorted: Keras's export numbers the variables in an order
    that changes from process to process (same values, other slots), so its bytes differ."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    names = [k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")]
    return sorted(reader.get_tensor(k).tobytes() for k in names)


def _onnx_function(path) -> tuple[list[str], list[bytes]]:
    """What tf2onnx makes the same in every process: its operators and its outputs on one
    input. Not its bytes: the numbers in its generated names (``roi__162``) come from a global
    counter that its optimizer passes advance in set order, which Python's per-process string
    hashing changes."""
    import onnx

    from trtflow.onnx.compare import make_inputs
    from trtflow.onnx.ort import OnnxRunner

    ops = sorted(n.op_type for n in onnx.load(str(path)).graph.node)
    outputs = OnnxRunner(str(path))(make_inputs(1, 64, 0))
    return ops, [v.tobytes() for v in outputs.values()]


def test_every_manifest_command_reproduces_its_artifact(built, tmp_path):
    """Each manifest's ``command``, run from a fresh shell in the zoo with --out moved, writes
    the same artifact: the same sha256 where the tool is deterministic (the frozen pb, written
    with a deterministic serialisation, and the patched ONNX); tf2onnx's ONNX has the same
    operators and outputs (_onnx_function), the SavedModel the same variable values
    (_saved_model_values). The new manifest records the line that was run, so the command is
    complete: nothing the stage was called with is left out."""
    import shlex

    from conftest import reproduce

    from trtflow.core.manifest import sha256_path

    wd, _ = built
    results = wd.path / "results"
    manifests = sorted(p for p in results.rglob("*.manifest.json") if "tiny-a" in p.parts)
    stages = {json.loads(p.read_text())["stage"]: p for p in manifests}
    assert set(stages) == {"export_saved_model", "export_pb", "convert_pb_to_onnx", "patch_onnx"}
    for stage, path in stages.items():
        man, artifact, argv = reproduce(wd.path, path, tmp_path / stage)
        new = json.loads((artifact.parent / f"{artifact.name}.manifest.json").read_text())
        assert shlex.split(new["command"]) == argv, stage
        assert new["options"] == man["options"], stage
        assert new["inputs"] == man["inputs"], stage
        if stage == "export_saved_model":
            assert _saved_model_values(artifact) == _saved_model_values(wd.path / man["artifact"])
        elif stage == "convert_pb_to_onnx":
            assert _onnx_function(artifact) == _onnx_function(wd.path / man["artifact"])
        else:
            assert sha256_path(artifact) == man["sha256"], stage


def test_every_report_command_writes_its_report_again(built, tmp_path):
    """The JSON reports (parity, the ONNX benchmarks) record the ``trtflow`` line that wrote
    them, like the manifests: run from the zoo with --out moved it writes the same verdict
    again (the INT8 reports: test_int8_workflow)."""
    from conftest import report_commands, reproduce_report

    wd, _ = built
    reports = report_commands(wd.path / "results", "tiny-a")
    assert set(reports) == {"parity", "benchmark"}
    reproduce_report(wd.path, reports["parity"], tmp_path / "parity",
                     ("ok", "raw_vs_tf", "patched_vs_tf", "max_rel"))  # fmt: skip
    reproduce_report(wd.path, reports["benchmark"], tmp_path / "benchmark",
                     ("batch", "threads", "iterations", "onnx"))  # fmt: skip


# ---------------------------------------------------------------- the report (README "Report")
def _report(wd) -> tuple[str, dict]:
    """`snakemake --report report.html` in the zoo: the page and its results' JSON."""
    wd.snakemake("--report", "report.html")
    page = (wd.path / "report.html").read_text()
    embedded = {}
    for path in re.findall(r'"(results/report/[^"]+)": \{"name"', page):
        entry = re.escape(f'"{path}": {{') + r'.*?"data_uri": "data:[^;]+;[^,]*base64,([^"]+)"'
        m = re.search(entry, page)
        embedded[path] = base64.b64decode(m.group(1)) if m else b""
    return page, embedded


def _zoo_rows(page: str) -> list[list[str]]:
    """Cells of the zoo table's rows (the table after <h2>Zoo</h2>)."""
    zoo = page.split("<h2>Zoo</h2>")[1].split("</table>")[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)
            for tr in re.findall(r"<tr>(.*?)</tr>", zoo, flags=re.S)[1:]]  # fmt: skip


def test_report_has_the_zoo_table_plots_and_manifests(built):
    wd, _ = built
    page, embedded = _report(wd)
    for plot in ("latency", "accuracy_vs_latency", "int8_agreement", "build_times"):
        png = embedded[f"results/report/plots/{plot}.png"]
        assert png.startswith(b"\x89PNG") and len(png) > 5000, plot
    for entry in ("results/report/models/tiny-a/64.html", "results/report/models/tiny-b/64.html",
                  "results/report/targets/cpu.html"):  # fmt: skip
        assert entry in embedded, entry
    for category in ("1. Zoo", "2. Stages", "3. Models", "4. Targets"):
        assert category in page
    zoo = embedded["results/report/zoo.html"].decode()
    assert zoo == (wd.path / "results/report/zoo.html").read_text()
    rows = _zoo_rows(zoo)
    # one row per timed artifact: tiny-a (dynamic batch) at b1 and b2, tiny-b (batch 1) at b1
    timed = [("tiny-a", 1), ("tiny-a", 2), ("tiny-b", 1)]
    assert [(r[0], int(r[5])) for r in rows] == timed
    r = wd.path / "results"
    for row, (model, batch) in zip(rows, timed, strict=True):
        bench = json.loads((r / f"benchmark_onnx/{model}/64/b{batch}.json").read_text())
        assert row[2:5] == ["ONNX", "fp32", "cpu"]
        assert f"{bench['p50_ms']:.2f}".rstrip("0").rstrip(".") in row  # p50 from the JSON
        assert any(c.startswith("ok (max abs") for c in row), row  # parity column
        # its manifests and reports one click away, with their content
        for f in (f"benchmark_onnx/{model}/64/b{batch}.json", f"parity/{model}/64/parity.json",
                  f"patched/{model}/64/model.onnx.manifest.json"):  # fmt: skip
            assert f'<summary title="results/{f}">' in row[-1], f
        assert "&quot;sha256&quot;" in row[-1]
    assert "Every job of this report ran and every gate passed" in zoo
    assert zoo.count('src="data:image/png;base64,') == 4
    model_page = embedded["results/report/models/tiny-b/64.html"].decode()
    for f in ("saved_model/tiny-b/64.manifest.json", "pb/tiny-b/64/model.pb.manifest.json",
              "onnx/tiny-b/64/model.onnx.manifest.json"):  # fmt: skip
        assert f'<summary title="results/{f}">' in model_page, f


def test_report_opens_in_headless_chromium(built, tmp_path):
    """.ci/check_report.py: the report and its zoo page, screenshotted, are not blank."""
    if not shutil.which("chromium") and os.environ.get("TRTFLOW_REQUIRE_CHROMIUM") != "1":
        pytest.skip("no chromium (apt-get install chromium; CI sets TRTFLOW_REQUIRE_CHROMIUM=1)")
    wd, _ = built
    _report(wd)
    proc = subprocess.run(
        [sys.executable, str(REPO / ".ci/check_report.py"), str(wd.path / "report.html"),
         "--out", str(tmp_path), "--show", "results/report/zoo.html"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" — ok") == 2, proc.stdout
    assert (tmp_path / "zoo.png").stat().st_size > 20_000


def test_report_shows_engines_per_target_and_why_some_failed(built, tmp_path):
    """Two targets driving the trtexec TEST STAND-IN: `dev` builds; `bad` declares a TensorRT
    version its trtexec does not report, so its builds fail. The report made after `snakemake
    engine --keep-going` has dev's rows, speed-ups and fastest line, and bad's failed builds
    with their log's last lines; it never waits for (or fails with) a device job."""
    from engine_support import make_trtexec

    wd, cfg = built
    dev = {"transport": "local", "trtexec": str(make_trtexec(tmp_path / "b10", "10.3.0")),
           "tensorrt": "10.3", "device": "STAND-IN GPU", "precisions": ["fp32"]}  # fmt: skip
    bad = {**dev, "trtexec": str(make_trtexec(tmp_path / "b82", "8.2.1")), "tensorrt": "8.2.3"}
    wd.write_config({**cfg, "precisions": ["fp32"], "targets": {"dev": dev, "bad": bad}})
    try:
        assert wd.snakemake("engine", "--keep-going", check=False).returncode != 0
        wd.snakemake("report")
        zoo = (wd.path / "results/report/zoo.html").read_text()
        rows = [r for r in _zoo_rows(zoo) if r[2].startswith("engine")]
        timed = [("tiny-a", "b1"), ("tiny-a", "b2"), ("tiny-b", "b1")]
        assert [(r[0], r[2]) for r in rows] == [(m, f"engine {p}") for m, p in timed]
        assert {r[4] for r in rows} == {"dev (TEST STAND-IN: fake timings)"}
        res = wd.path / "results"
        for row, (model, profile) in zip(rows, timed, strict=True):
            bench = json.loads((res / f"benchmark_engine/dev/{model}/64/fp32/{profile}.json")
                               .read_text())  # fmt: skip
            onnx = json.loads((res / f"benchmark_onnx/{model}/64/{profile}.json").read_text())
            p50 = round(bench["host_latency"]["p50_ms"], 2)
            assert f"{p50:.2f}".rstrip("0").rstrip(".") in row
            speedup = round(round(onnx["p50_ms"], 2) / p50, 2)
            assert f"{speedup:.2f}".rstrip("0").rstrip(".") in row, (row, speedup)
            assert "engine parity ok" in row
        fastest = zoo.split("</table>")[0]
        assert fastest.count("<td>dev</td>") == 2  # one line per model on the dev target
        assert "missing results/engine/bad/tiny-a/64/fp32/b1.engine.manifest.json" in zoo
        assert zoo.count("declares TensorRT 8.2.3 but its trtexec reports 8.2.1") == 3
        assert (res / "report/targets/dev.html").is_file()
    finally:
        wd.write_config(cfg)


def test_failed_gate_still_writes_summary_and_report_then_fails(built):
    """A parity tolerance no model meets: both verdicts are written, the summary, the report
    and its page list the failures, and only then does check_gates fail the run."""
    wd, cfg = built
    cfg["parity"] = {**cfg.get("parity", {}), "atol": 1e-12, "rtol": 1e-12}
    wd.write_config(cfg)
    try:
        proc = wd.snakemake(check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert "Error in rule check_gates" in out, out[-3000:]
        failed = r"2 of 2 gates failed: parity tiny-a/64: \w+_vs_tf output"
        assert re.search(failed, out), out[-3000:]
        r = wd.path / "results"
        assert not (r / "gates.json").exists()
        md = (r / "summary.md").read_text()
        assert "## Failed gates" in md and "- parity tiny-b/64: " in md, md
        assert [row["gates"] for row in csv.DictReader(open(r / "summary.csv"))] == [
            "parity FAILED", "parity FAILED"]  # fmt: skip
        for model in ("tiny-a", "tiny-b"):
            assert json.loads((r / f"parity/{model}/64/parity.json").read_text())["ok"] is False
        _, embedded = _report(wd)  # the report is made after a failed run too
        zoo = embedded["results/report/zoo.html"].decode()
        assert "<b class=bad>2 failed</b>" in zoo and "parity gate tiny-a/64" in zoo
        assert all("FAILED" in " ".join(row) for row in _zoo_rows(zoo))
    finally:
        cfg["parity"] = {"batch": 1}
        wd.write_config(cfg)
