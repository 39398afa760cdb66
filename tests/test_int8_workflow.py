"""The INT8 rules in the workflow: the int8 switch of `all`, a real `snakemake int8` on a toy
detector (the TF/ONNX stages skipped by pre-seeding the patched ONNX), and a bad calibration
folder failing with one line and no artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from int8_models import tiny_detector, write_images

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1"]


def _workdir(tmp_path: Path, images: str | None, enabled: bool = True) -> Path:
    config = {
        "models": {"toy": {"image_sizes": [64], "batch": "dynamic"}},
        "calibration": {"images": images, "count": 4, "holdout": 2},
        "int8": {"enabled": enabled, "trt_cache_versions": ["8.6.1", "8.2.1"],
                 "gate": {"min_map50_vs_fp32": 0.3}},
        "benchmark": {"warmup": 1, "iterations": 2, "threads": 1},
    }  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    patched = tmp_path / "results" / "patched" / "toy" / "64" / "model.onnx"
    patched.parent.mkdir(parents=True)
    tiny_detector(patched)
    return tmp_path


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, timeout=300
    )


def _planned(workdir: Path, target: str) -> set[str]:
    r = _run(workdir, "-n", target)
    assert r.returncode == 0, r.stdout + r.stderr
    stats = (r.stdout + r.stderr).split("Job stats:")[1].split("total")[0]
    return {line.split()[0] for line in stats.splitlines()[3:] if line.strip()}


def test_all_includes_int8_only_when_enabled(tmp_path):
    on = _planned(_workdir(tmp_path / "on", None, True), "all")
    off = _planned(_workdir(tmp_path / "off", None, False), "all")
    assert {"check_int8_accuracy", "benchmark_int8", "make_sample_images"} <= on
    assert not {"quantize_onnx", "check_int8_accuracy", "benchmark_int8"} & off
    assert "write_calibration_cache" in _planned(tmp_path / "off", "int8")


@pytest.mark.slow
def test_snakemake_int8_end_to_end(tmp_path):
    write_images(tmp_path / "imgs", 6)
    wd = _workdir(tmp_path / "wd", str(tmp_path / "imgs"))
    r = _run(wd, "int8")
    assert r.returncode == 0, r.stdout + r.stderr
    res = wd / "results"
    assert (res / "int8/toy/64/model.qdq.onnx").is_file()
    for version, code in (("8.6.1", 8601), ("8.2.1", 8201)):
        cache = (res / f"int8/toy/64/calib_trt{version}.cache").read_text()
        assert cache.startswith(f"TRT-{code}-EntropyCalibration2\n")
    gate = json.loads((res / "int8_gate/toy/64/gate.json").read_text())
    assert gate["ok"] and gate["images"] == 2
    bench = json.loads((res / "benchmark_int8/toy/64/b1.json").read_text())
    assert bench["threads"] == 1 and bench["speedup"] > 0
    assert (wd / "logs/quantize_onnx/toy/64.log").is_file()
    assert (wd / "benchmarks/quantize_onnx/toy/64.tsv").is_file()

    # each manifest's command makes the same bytes again (sampling and calibration are seeded)
    from conftest import reproduce

    from trtflow.core.manifest import sha256_path

    manifests = sorted(res.rglob("*.manifest.json"))
    stages = {json.loads(p.read_text())["stage"] for p in manifests}
    assert stages == {"make_calibration_data", "quantize_onnx", "write_calibration_cache"}
    for i, path in enumerate(manifests):
        man, artifact, _ = reproduce(wd, path, tmp_path / "again" / str(i))
        assert sha256_path(artifact) == man["sha256"], man["command"]
    # and each report's command writes the same verdict again
    from conftest import report_commands, reproduce_report

    reports = report_commands(res, "toy")
    assert {"int8-gate", "benchmark-int8"} <= set(reports), reports
    reproduce_report(wd, reports["int8-gate"], tmp_path / "gate", ("ok", "errors", "images"))
    reproduce_report(wd, reports["benchmark-int8"], tmp_path / "bench", ("batch", "threads"))


def test_bad_calibration_folder_fails_the_job_cleanly(tmp_path):
    (tmp_path / "imgs").mkdir()
    write_images(tmp_path / "imgs", 3)  # count 4 + holdout 2 need 6
    wd = _workdir(tmp_path / "wd", str(tmp_path / "imgs"))
    r = _run(wd, "results/calib/toy/64/calib.npy")
    assert r.returncode != 0
    log = (wd / "logs/make_calibration_data/toy/64.log").read_text().strip().splitlines()
    assert "ERROR" in log[-1] and str(tmp_path / "imgs") in log[-1] and "need 6" in log[-1]
    assert not list((wd / "results").glob("calib/**/*.npy"))
