"""No-op rerun time of a zoo DAG of >= 100 jobs vs bare ``snakemake -n`` on a one-rule Snakefile.

The zoo (N builtin models x 2 image sizes x 2 batch sizes) is marked complete by creating every
output of ``snakemake --summary``, then ``snakemake --touch`` (no TF runs needed), so the timed
run is a real no-op: parse, validate the config, build the DAG, stat every file, decide nothing.

A third case separates Snakemake's own cost from trtflow's: a plain Snakefile with the same
rules' shape (the same per-model jobs, outputs, manifests, logs, benchmarks and params; no
trtflow code, no config schema, no code hashes) over the same models, made complete the same
way. ``zoo / same DAG`` is what trtflow adds; ``same DAG / one rule`` is Snakemake's per-job
cost of building and checking a DAG of this size.

    python bench/workflow_overhead.py [--models 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trtflow.core.cpu import cpu_label  # noqa: E402


def snakemake(workdir: Path, snakefile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def timed_interleaved(cases: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median wall time of each case, one run of each per round (drift hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


#: The zoo's DAG without trtflow: per model and image size SavedModel -> pb -> ONNX -> patched
#: ONNX, parity, one benchmark per batch size; then the summary, report and gates over all of
#: them (rules/*.smk, the same inputs, outputs, logs, benchmarks and params per rule).
PLAIN_SNAKEFILE = """
M = [f"m{i:02d}" for i in range(config["models"])]
S, B = [320, 640], [1, 4]
wildcard_constraints:
    m="|".join(M), s=r"\\d+", b=r"\\d+"

def stage(name, pattern):
    return dict(log=f"logs/{name}/{pattern}.log", benchmark=f"benchmarks/{name}/{pattern}.tsv")

rule all:
    input:
        expand("r/parity/{m}/{s}.json", m=M, s=S),
        expand("r/bench/{m}/{s}/b{b}.json", m=M, s=S, b=B),
        "r/summary.csv", "r/summary.md", "r/report/index.html", "r/gates.json"

rule saved_model:
    output: sm=directory("r/sm/{m}/{s}/saved_model"), manifest="r/sm/{m}/{s}/sm.manifest.json"
    log: stage("saved_model", "{m}/{s}")["log"]
    benchmark: stage("saved_model", "{m}/{s}")["benchmark"]
    params: model=lambda w: {"variant": "n", "seed": w.m}, code="c0"
    shell: "touch {output}"

rule pb:
    input: source="r/sm/{m}/{s}/saved_model"
    output: pb="r/pb/{m}/{s}/model.pb", manifest="r/pb/{m}/{s}/model.pb.manifest.json"
    log: stage("pb", "{m}/{s}")["log"]
    benchmark: stage("pb", "{m}/{s}")["benchmark"]
    params: model=lambda w: {"variant": "n", "seed": w.m}, code="c1"
    shell: "touch {output}"

rule onnx:
    input: pb="r/pb/{m}/{s}/model.pb", manifest="r/pb/{m}/{s}/model.pb.manifest.json"
    output: onnx="r/onnx/{m}/{s}/model.onnx", manifest="r/onnx/{m}/{s}/model.onnx.manifest.json"
    log: stage("onnx", "{m}/{s}")["log"]
    benchmark: stage("onnx", "{m}/{s}")["benchmark"]
    params: opset=17, code="c2"
    shell: "touch {output}"

rule patch:
    input: onnx="r/onnx/{m}/{s}/model.onnx", pb_manifest="r/pb/{m}/{s}/model.pb.manifest.json"
    output: onnx="r/patched/{m}/{s}/model.onnx", manifest="r/patched/{m}/{s}/m.manifest.json"
    log: stage("patch", "{m}/{s}")["log"]
    benchmark: stage("patch", "{m}/{s}")["benchmark"]
    params: patch=lambda w: {"recipe": ["a", "b"], "image_size": int(w.s)}, code="c3"
    shell: "touch {output}"

rule parity:
    input:
        pb="r/pb/{m}/{s}/model.pb", pb_manifest="r/pb/{m}/{s}/model.pb.manifest.json",
        raw="r/onnx/{m}/{s}/model.onnx", patched="r/patched/{m}/{s}/model.onnx",
        patched_manifest="r/patched/{m}/{s}/m.manifest.json"
    output: report="r/parity/{m}/{s}.json"
    log: stage("parity", "{m}/{s}")["log"]
    benchmark: stage("parity", "{m}/{s}")["benchmark"]
    params: parity=lambda w: {"rtol": 1e-3}, code="c4"
    shell: "touch {output}"

rule bench:
    input: onnx="r/patched/{m}/{s}/model.onnx"
    output: report="r/bench/{m}/{s}/b{b}.json"
    log: stage("bench", "{m}/{s}/b{b}")["log"]
    benchmark: stage("bench", "{m}/{s}/b{b}")["benchmark"]
    params: bench={"warmup": 3, "iterations": 20}, code="c5"
    shell: "touch {output}"

rule summary:
    input:
        pb=expand("r/pb/{m}/{s}/model.pb.manifest.json", m=M, s=S),
        raw=expand("r/onnx/{m}/{s}/model.onnx.manifest.json", m=M, s=S),
        patched=expand("r/patched/{m}/{s}/m.manifest.json", m=M, s=S),
        parity=expand("r/parity/{m}/{s}.json", m=M, s=S),
        bench=expand("r/bench/{m}/{s}/b{b}.json", m=M, s=S, b=B)
    output: csv="r/summary.csv", md="r/summary.md"
    log: "logs/summary.log"
    params: code="c6"
    shell: "touch {output}"

rule report:
    input: "r/summary.csv", expand("r/parity/{m}/{s}.json", m=M, s=S)
    output: "r/report/index.html"
    log: "logs/report.log"
    params: code="c7"
    shell: "touch {output}"

rule gates:
    input: "r/summary.csv", expand("r/parity/{m}/{s}.json", m=M, s=S)
    output: "r/gates.json"
    log: "logs/gates.log"
    params: code="c8"
    shell: "touch {output}"
"""


def complete(workdir: Path, snakefile: Path, *config: str) -> int:
    """Create every output of the DAG in ``workdir`` and record its provenance with --touch,
    as a finished run would leave it; returns the number of jobs."""
    dry = snakemake(workdir, snakefile, "-n", *config).stdout
    jobs = int(re.search(r"^total\s+(\d+)", dry, re.M).group(1))
    summary = snakemake(workdir, snakefile, "--summary", *config).stdout.splitlines()
    for row in (line.split("\t") for line in summary[1:] if "\t" in line):
        path = workdir / row[0]
        if "." not in path.name:  # directory outputs (SavedModel, report folders)
            path.mkdir(parents=True, exist_ok=True)
            (path / "saved_model.pb").write_bytes(b"")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    # record provenance (params, code hashes) as a real run would, without running the jobs
    snakemake(workdir, snakefile, "--touch", "--cores", "1", *config)
    out = snakemake(workdir, snakefile, "-n", *config).stdout
    assert "Nothing to be done" in out, out[:3000]
    return jobs


def make_zoo(workdir: Path, n_models: int) -> int:
    models = {
        f"m{i:02d}": {"variant": "n", "seed": i, "image_sizes": [320, 640]} for i in range(n_models)
    }
    cfg = {"models": models, "batch_sizes": [1, 4]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return complete(workdir, REPO / "Snakefile")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        zoo = Path(d) / "zoo"
        zoo.mkdir()
        jobs = make_zoo(zoo, args.models)
        plain = Path(d) / "plain"
        plain.mkdir()
        (plain / "Snakefile").write_text(PLAIN_SNAKEFILE)
        plain_config = ("--config", f"models={args.models}")
        plain_jobs = complete(plain, plain / "Snakefile", *plain_config)
        one = Path(d) / "one"
        one.mkdir()
        (one / "Snakefile").write_text(
            'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n'
        )
        (one / "a.txt").write_text("")
        cases = {
            "trtflow zoo, no-op rerun (snakemake --cores 1)": (
                jobs, lambda: snakemake(zoo, REPO / "Snakefile", "--cores", "1")),
            "same DAG, plain Snakefile, no-op (--cores 1)": (
                plain_jobs,
                lambda: snakemake(plain, plain / "Snakefile", "--cores", "1", *plain_config)),
            "one-rule Snakefile, snakemake -n": (
                1, lambda: snakemake(one, one / "Snakefile", "-n")),
        }  # fmt: skip
        times = timed_interleaved({k: f for k, (_, f) in cases.items()}, args.repeats)
    print(f"CPU: {cpu_label()}; {os.cpu_count()} cores; median of {args.repeats} interleaved runs")
    print(f"\n{'case':48s} {'jobs':>6s} {'median s':>9s}")
    for name, (n, _) in cases.items():
        print(f"{name:48s} {n:6d} {times[name]:9.2f}")
    t_zoo, t_plain, t_one = times.values()
    print(f"\nratio zoo no-op / bare one-rule:          {t_zoo / t_one:.2f}")
    print(f"ratio same DAG without trtflow / one-rule: {t_plain / t_one:.2f}  (Snakemake's own)")
    print(f"ratio zoo / same DAG without trtflow:      {t_zoo / t_plain:.2f}  (what trtflow adds)")


if __name__ == "__main__":
    main()
