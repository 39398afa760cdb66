"""`snakemake engine` end to end on a tiny zoo: a local target and a loopback-SSH target, both
driving the trtexec TEST STAND-IN. The TF/ONNX stages are skipped by pre-seeding the patched
ONNX (results/patched/...) and its manifest, as the patch stage would leave them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from engine_support import (
    REPO,
    make_trtexec,
    seed_patched,
    sshd_unavailable,
    start_sshd,
    stop_sshd,
)

pytestmark = pytest.mark.slow

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2"]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, check=False, timeout=600
    )
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def planned_jobs(workdir: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run of `engine` would run."""
    r = snakemake(workdir, "-n", "engine")
    jobs = []
    text = r.stdout + "\n" + r.stderr
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", text, flags=re.M)[1:]:
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        w = re.search(r"^\s+wildcards: (.*)$", block.split("\nJob stats:")[0], re.M)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        jobs.append((m.group(1), wildcards))
    return jobs


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if sshd_unavailable():
        pytest.skip(f"no loopback sshd: {sshd_unavailable()}")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


def write_config(workdir: Path, targets: dict) -> None:
    config = {
        "models": {
            "tiny": {"source": "builtin", "variant": "n", "image_sizes": [32], "batch": "dynamic"}
        },
        "batch_sizes": [1],
        "precisions": ["fp32", "fp16"],
        "engine": {
            "dynamic_profiles": [{"min": 1, "opt": 2, "max": 4}],
            "benchmark": {"iterations": 10, "warmup_ms": 0},
        },
        "targets": targets,
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_engine_end_to_end(tmp_path, sshd):
    wd = tmp_path / "run"
    wd.mkdir()
    seed_patched(wd, "tiny", 32)
    local = {
        "transport": "local",
        "trtexec": str(make_trtexec(tmp_path / "bin10", "10.3.0")),
        "tensorrt": "10.3",
        "device": "STAND-IN GPU",
        "precisions": ["fp32", "fp16"],
    }
    nano = sshd.target(
        make_trtexec(tmp_path / "bin82", "8.2.1"), "8.2.1", tmp_path / "remote", precisions=["fp16"]
    )
    targets = {"local-trt10": local, "ssh-nano": nano}
    write_config(wd, targets)

    # 1. everything is built, benchmarked and checked
    snakemake(wd, "engine")
    expected = [
        (t, p, prof)
        for t, precisions in (("local-trt10", ["fp32", "fp16"]), ("ssh-nano", ["fp16"]))
        for p in precisions
        for prof in ("b1", "b1-2-4")
    ]
    for t, p, prof in expected:
        engine = wd / f"results/engine/{t}/tiny/32/{p}/{prof}.engine"
        man = json.loads(Path(f"{engine}.manifest.json").read_text())
        assert man["target"] == t and man["standin"] and man["options"]["precision"] == p
        bench = json.loads(
            (wd / f"results/benchmark_engine/{t}/tiny/32/{p}/{prof}.json").read_text()
        )
        assert bench["standin"] and bench["gpu_compute"]["p99_ms"] > 0
        parity = json.loads((wd / f"results/parity_engine/{t}/tiny/32/{p}/{prof}.json").read_text())
        assert parity["ok"]
    assert len(list((wd / "results/engine").rglob("*.engine"))) == len(expected)
    assert (wd / "results/timing_cache/ssh-nano.cache").is_file()

    # 2. a second run has nothing to do
    assert planned_jobs(wd) == []

    # 3. how the device is reached is not a build option: a new port/user rebuilds nothing
    write_config(wd, {**targets, "ssh-nano": {**nano, "connect_timeout": 7, "workdir": "/tmp/x"}})
    assert planned_jobs(wd) == []

    # 4. a new declared TensorRT version reruns exactly that target's jobs
    newer = {**nano, "tensorrt": "8.2.3"}
    write_config(wd, {**targets, "ssh-nano": newer})
    jobs = planned_jobs(wd)
    per_rule: dict[str, int] = {}
    for rule, wildcards in jobs:
        per_rule[rule] = per_rule.get(rule, 0) + 1
        # the aggregate and the engine summary (one job for every target) have no target
        assert rule in ("engine", "render_engine_summary") or wildcards["target"] == "ssh-nano"
    assert per_rule == {
        "preflight_engine": 1,
        "build_engine": 2,
        "benchmark_engine": 2,
        "check_engine_parity": 2,
        "render_engine_summary": 1,
        "engine": 1,
    }

    # ... and the device's real version is checked: declaring 8.2.3 on an 8.2.1 device fails
    r = snakemake(wd, "engine", check=False)
    assert r.returncode != 0
    log = (wd / "logs/build_engine/ssh-nano/tiny/32/fp16/b1.log").read_text()
    assert "declares TensorRT 8.2.3 but its trtexec reports 8.2.1" in log
    assert not (wd / "results/engine/ssh-nano/tiny/32/fp16/b1.engine").exists()

    # once the device really runs 8.2.3, its engines rebuild and the rest stays untouched
    before = (wd / "results/engine/local-trt10/tiny/32/fp32/b1.engine").stat().st_mtime_ns
    write_config(
        wd,
        {
            **targets,
            "ssh-nano": {**newer, "trtexec": str(make_trtexec(tmp_path / "bin823", "8.2.3"))},
        },
    )
    snakemake(wd, "engine")
    assert planned_jobs(wd) == []
    man = json.loads(
        (wd / "results/engine/ssh-nano/tiny/32/fp16/b1.engine.manifest.json").read_text()
    )
    assert man["tensorrt"] == {"declared": "8.2.3", "probed": "8.2.3"}
    assert (wd / "results/engine/local-trt10/tiny/32/fp32/b1.engine").stat().st_mtime_ns == before


def test_engine_without_targets_explains_how_to_configure_one(tmp_path):
    seed_patched(tmp_path, "tiny", 32)
    write_config(tmp_path, {})
    r = snakemake(tmp_path, "-n", "engine", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "no TensorRT target is configured" in out and "transport: ssh" in out


def test_dry_run_builds_the_dag_without_tensorrt(tmp_path):
    """Targets configured, no TensorRT, no device reachable: the DAG still builds."""
    seed_patched(tmp_path, "tiny", 32)
    write_config(
        tmp_path,
        {
            "jetson-nano": {
                "transport": "ssh",
                "host": "192.0.2.1",
                "user": "nvidia",
                "trtexec": "/usr/src/tensorrt/bin/trtexec",
                "tensorrt": "8.2.1",
                "device": "NVIDIA Tegra X1",
                "precisions": ["fp16"],
            },
            "no-trt-here": {"tensorrt": "10.3", "device": "some GPU"},
        },
    )
    jobs = planned_jobs(tmp_path)
    builds = sorted(
        (w["target"], w["precision"], w["profile"]) for r, w in jobs if r == "build_engine"
    )
    assert builds == [
        ("jetson-nano", "fp16", "b1"),
        ("jetson-nano", "fp16", "b1-2-4"),
        ("no-trt-here", "fp16", "b1"),
        ("no-trt-here", "fp16", "b1-2-4"),
        ("no-trt-here", "fp32", "b1"),
        ("no-trt-here", "fp32", "b1-2-4"),
    ]
    # running it fails with one clear message naming the target
    r = snakemake(tmp_path, "results/engine/no-trt-here/tiny/32/fp32/b1.engine", check=False)
    assert r.returncode != 0
    log = (tmp_path / "logs/build_engine/no-trt-here/tiny/32/fp32/b1.log").read_text()
    assert "target 'no-trt-here': trtexec (trtexec) is not found on this host" in log


def test_int8_engines_take_the_int8_stage_or_configured_files(tmp_path):
    """int8 with no engine.int8 entry: TRT >= 10 builds the INT8 stage's Q/DQ ONNX, 8.x gets a
    calibration cache written for its exact version; a configured file replaces both."""
    seed_patched(tmp_path, "tiny", 32)
    write_config(
        tmp_path,
        {
            "gpu": {"tensorrt": "10.3", "device": "GPU", "precisions": ["fp16", "int8"]},
            "xavier": {"tensorrt": "8.5.2", "device": "Xavier", "precisions": ["int8"]},
        },
    )
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["precisions"] = ["fp16", "int8"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(tmp_path)
    rules = [r for r, _ in jobs]
    assert rules.count("quantize_onnx") == 1
    caches = [w for r, w in jobs if r == "write_calibration_cache"]
    assert [w["trt"] for w in caches] == ["8.5.2"]
    assert sum(1 for r, w in jobs if r == "build_engine" and w["precision"] == "int8") == 4
    config["engine"]["int8"] = {"tiny": {"calibration_cache": "calib/{model}-{imgsz}.cache"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib/tiny-32.cache").write_text("TRT-100300-EntropyCalibration2\n")
    jobs = planned_jobs(tmp_path)
    assert "quantize_onnx" not in [r for r, _ in jobs]
    assert sum(1 for r, w in jobs if r == "build_engine" and w["precision"] == "int8") == 4
