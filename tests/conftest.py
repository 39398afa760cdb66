"""Shared fixtures: run the real workflow in a temp working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trtflow.core.config import default_recipe

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tiny_model(**overrides):
    """A builtin YOLOv5n at 64x64 with 2 classes: the whole chain in seconds."""
    entry = {
        "source": "builtin",
        "variant": "n",
        "classes": 2,
        "seed": 0,
        "image_sizes": [64],
        "batch": "dynamic",
        "patches": default_recipe(),
    }
    entry.update(overrides)
    return entry


def tiny_config(models=None, **top):
    cfg = {
        "models": models or {"tiny": tiny_model()},
        "benchmark": {"warmup": 1, "iterations": 3, "threads": 1},
        "parity": {"batch": 1},
        "batch_sizes": [1],
    }
    cfg.update(top)
    return cfg


class Workdir:
    """A working directory with a config.yaml, driven by the real ``snakemake`` CLI."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write_config(self, cfg) -> None:
        (self.path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def snakemake(self, *args: str, check: bool = True, timeout: int = 900):
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "-d", str(self.path), "--cores", "2", *args]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
            )
        return proc

    def planned_jobs(self, *targets: str) -> dict[str, int]:
        """Rule -> job count that a dry run would execute (empty dict = nothing to do)."""
        proc = self.snakemake("-n", *targets)
        text = proc.stdout + proc.stderr
        if "Nothing to be done" in text:
            return {}
        stats = text.split("Job stats:")[1]
        counts = {}
        for line in stats.splitlines()[3:]:
            m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
            if not m:
                break
            counts[m.group(1)] = int(m.group(2))
        counts.pop("total", None)
        return counts


@pytest.fixture
def workdir(tmp_path: Path) -> Workdir:
    return Workdir(tmp_path)


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trtflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def report_commands(results: Path, part: str) -> dict[str, Path]:
    """The JSON reports under ``results`` (one per ``trtflow`` command, path containing the
    folder ``part``) that record the line that wrote them: command name -> report."""
    import json
    import shlex

    found: dict[str, Path] = {}
    for path in sorted(results.rglob("*.json")):
        if part not in path.parts or path.name.endswith(".manifest.json"):
            continue
        command = json.loads(path.read_text()).get("command")
        if isinstance(command, str) and command.startswith("trtflow "):
            found.setdefault(shlex.split(command)[1], path)
    return found


def reproduce_report(workdir: Path, report: Path, out: Path, same: tuple[str, ...]) -> None:
    """Run a JSON report's ``command`` from ``workdir`` with --out moved under ``out``: the new
    report records the line that was run, has the same fields, and the same values of ``same``
    (a verdict; timings are new measurements)."""
    import json
    import shlex

    old = json.loads(report.read_text())
    _, artifact, argv = reproduce(workdir, report, out)
    written = artifact / report.name if artifact.is_dir() else artifact
    new = json.loads(written.read_text())
    assert shlex.split(new["command"]) == argv, report
    assert set(new) == set(old), (report, set(new) ^ set(old))
    for key in same:
        assert new[key] == old[key], (report, key)


def reproduce(workdir: Path, manifest: Path, out: Path) -> tuple[dict, Path, list[str]]:
    """Run the ``command`` a manifest records, from ``workdir``, with its written paths moved
    under ``out``: (the manifest, the new artifact, the argv run)."""
    import json
    import shlex

    from trtflow.core.commands import BY_COMMAND, out_flags

    man = json.loads(manifest.read_text())
    argv = shlex.split(man["command"])
    assert argv[0] == "trtflow", man["command"]
    stage = BY_COMMAND[argv[1]]
    artifact = None
    for flag in out_flags(stage):
        if flag in argv:
            i = argv.index(flag) + 1
            argv[i] = str(out / flag.lstrip("-") / Path(argv[i]).name)
            artifact = Path(argv[i]) if flag == "--out" else artifact
    assert artifact is not None, f"{man['command']}: no --out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "trtflow", *argv[1:]], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"{shlex.join(argv)}:\n{proc.stderr[-4000:]}"
    return man, artifact, argv
