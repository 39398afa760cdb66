"""No-op rerun time of a zoo DAG of >= 100 jobs vs bare ``snakemake -n`` on a one-rule Snakefile.

The zoo (N builtin models x 2 image sizes x 2 batch sizes) is marked complete by creating every
output of ``snakemake --summary``, then ``snakemake --touch`` (no TF runs needed), so the timed
run is a real no-op: parse, validate the config, build the DAG, stat every file, decide nothing.

    python bench/workflow_overhead.py [--models 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def snakemake(workdir: Path, snakefile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_zoo(workdir: Path, n_models: int) -> int:
    models = {
        f"m{i:02d}": {"variant": "n", "seed": i, "image_sizes": [320, 640]} for i in range(n_models)
    }
    cfg = {"models": models, "batch_sizes": [1, 4]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(workdir, REPO / "Snakefile", "-n").stdout
    jobs = int(re.search(r"^total\s+(\d+)", dry, re.M).group(1))
    summary = snakemake(workdir, REPO / "Snakefile", "--summary").stdout.splitlines()
    for row in (line.split("\t") for line in summary[1:] if "\t" in line):
        path = workdir / row[0]
        if "." not in path.name:  # directory outputs (SavedModel, report folders)
            path.mkdir(parents=True, exist_ok=True)
            (path / "saved_model.pb").write_bytes(b"")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    # record provenance (params, code hashes) as a real run would, without running the jobs
    snakemake(workdir, REPO / "Snakefile", "--touch", "--cores", "1")
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        zoo = Path(d) / "zoo"
        zoo.mkdir()
        jobs = make_zoo(zoo, args.models)
        out = snakemake(zoo, REPO / "Snakefile", "-n").stdout
        assert "Nothing to be done" in out, out[:3000]
        one = Path(d) / "one"
        one.mkdir()
        (one / "Snakefile").write_text(
            'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n'
        )
        (one / "a.txt").write_text("")
        t_zoo = timed(lambda: snakemake(zoo, REPO / "Snakefile", "--cores", "1"), args.repeats)
        t_one = timed(lambda: snakemake(one, one / "Snakefile", "-n"), args.repeats)
    print(f"{'case':46s} {'jobs':>6s} {'median s':>9s}")
    print(f"{'trtflow zoo, no-op rerun (snakemake --cores 1)':46s} {jobs:6d} {t_zoo:9.2f}")
    print(f"{'one-rule Snakefile, snakemake -n':46s} {1:6d} {t_one:9.2f}")
    print(f"\nratio zoo no-op / bare one-rule: {t_zoo / t_one:.2f}")


if __name__ == "__main__":
    main()
