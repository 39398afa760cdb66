"""End-to-end: the real workflow on a tiny zoo in a temp dir, then rerun-only-on-change."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import tiny_config, tiny_model

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
        # lean_decode trades tf2onnx's 4 nodes per head + 10 shared decode nodes (3 full copies
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
    cfg["models"]["tiny-b"]["patches"] = ["nchw_input", "fix_batch", "rename_io", "sanitize"]
    wd.write_config(cfg)
    assert wd.planned_jobs() == {
        "patch_onnx": 1,
        "check_parity": 1,
        "benchmark_onnx": 1,
        "render_summary": 1,
        "all": 1,
    }
    wd.snakemake()
    changed = {
        str(p.relative_to(wd.path))
        for p in (wd.path / "results").rglob("*")
        if p.is_file() and before.get(p) != p.stat().st_mtime_ns
    }
    assert changed == {
        "results/patched/tiny-b/64/model.onnx",
        "results/patched/tiny-b/64/model.onnx.manifest.json",
        "results/parity/tiny-b/64/parity.json",
        "results/benchmark_onnx/tiny-b/64/b1.json",
        "results/summary.csv",
        "results/summary.md",
    }
    assert wd.planned_jobs() == {}
