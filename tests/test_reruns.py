"""Reruns happen on every code change that matters, and only then: a real workflow run, then every
trtflow module edited in turn and `snakemake -n` asked which jobs it would rerun.

The expected rules of a module are those whose script's closure (trtflow.core.codehash) holds
it; a few hand-written expectations below check that closure against what the stages really run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from engine_support import make_trtexec

from trtflow.core.codehash import script_closure

REPO = Path(__file__).resolve().parent.parent
CODE = ("Snakefile", "rules", "scripts", "trtflow", "schemas", "envs", "report", "profiles")

pytestmark = pytest.mark.slow

#: Hand-checked: module -> rules it must rerun (exactly) among those the tiny run has.
EXACT = {
    "trtflow/quant/kernels.py": {"benchmark_int8"},
    "trtflow/reporting/pages.py": {"render_report"},
    "trtflow/trt/calibration_cache.py": {"write_calibration_cache"},
    "trtflow/images/datasets.py": {"make_dataset"},
}
#: module -> (rules it must rerun, rules it must not rerun)
SOME = {
    "trtflow/onnx/patches/yolo.py": ({"patch_onnx"}, {"convert_pb_to_onnx", "export_pb"}),
    "trtflow/tf/freeze.py": ({"export_saved_model", "export_pb"}, {"render_report"}),
    "trtflow/trt/trtexec.py": ({"build_engine", "benchmark_engine"}, {"patch_onnx"}),
    "trtflow/core/manifest.py": (
        {"export_pb", "patch_onnx", "build_engine", "render_summary"},
        set(),
    ),
}


def _copy_code(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in CODE:
        src = REPO / name
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.h5")
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _snakemake(code: Path, workdir: Path, *args: str, timeout: int = 1800):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(code / "Snakefile"), "-d", str(workdir),
           "--cores", "2", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def _params_changed(code: Path, workdir: Path) -> set[str]:
    """Rules of the outputs whose params (the code hash) changed since they were made.

    ``--summary`` gives each output's own status, so a rerun upstream does not hide the
    change of a rule below it (a dry run names only a job's first reason).
    """
    text = _snakemake(code, workdir, "all", "--nolock", "--summary")
    rows = [line.split("\t") for line in text.splitlines()[1:] if "\t" in line]
    return {row[2] for row in rows if row[-2] == "params changed"}


def _rule_of_outputs(code: Path, workdir: Path) -> dict[str, str]:
    """Output file -> rule, for every output of the run (``snakemake --summary``)."""
    text = _snakemake(code, workdir, "all", "--nolock", "--summary")
    rows = [line.split("\t") for line in text.splitlines()[1:] if "\t" in line]
    return {row[0]: row[2] for row in rows if row[2] != "all"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("reruns")
    code = _copy_code(base / "code")
    workdir = base / "wd"
    workdir.mkdir()
    config = {
        "models": {
            "tiny": {"source": "builtin", "variant": "n", "classes": 8, "image_sizes": [64],
                     "batch": "dynamic"},
        },
        "benchmark": {"warmup": 1, "iterations": 2, "threads": 1},
        "parity": {"batch": 1},
        "batch_sizes": [1],
        "precisions": ["fp32", "int8"],
        "calibration": {"count": 4, "holdout": 2},
        "dataset": {"train_count": 4, "val_count": 8},
        "int8": {"enabled": True, "trt_cache_versions": ["8.6.1"],
                 "gate": {"min_map50_vs_fp32": 0.0, "max_map50_drop": 1.0, "max_map_drop": 1.0,
                          "builtin_labels": True, "eval_count": 8}},
        "engine": {"dynamic_profiles": [], "benchmark": {"iterations": 2, "warmup_ms": 0}},
        "targets": {
            "local-trt10": {"transport": "local", "tensorrt": "10.3", "device": "STAND-IN GPU",
                            "trtexec": str(make_trtexec(base / "bin", "10.3.0")),
                            "precisions": ["fp32"]},
        },
    }  # fmt: skip
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _snakemake(code, workdir, "all")
    rule_of = _rule_of_outputs(code, workdir)
    missing = [f for f in rule_of if not (workdir / f).exists()]
    assert not missing, missing
    return code, workdir, rule_of


def _name(code: Path, module: Path) -> str:
    return ".".join(module.relative_to(code).with_suffix("").parts).replace(".__init__", "")


def _expected(code: Path, module: Path, ran: set[str]) -> set[str]:
    """Rules whose script's closure holds ``module`` (the copy's code is the repo's)."""
    name = _name(code, module)
    return {rule for rule in ran if name in script_closure(REPO / "scripts" / f"{rule}.py")}


def test_nothing_reruns_without_a_change(run):
    code, workdir, rule_of = run
    assert _params_changed(code, workdir) == set()
    # the report of a run that builds engines waits for them: a second run has nothing to do
    assert "Nothing to be done" in _snakemake(code, workdir, "all", "-n", "--nolock")


def test_report_commands_of_the_full_zoo_write_their_reports_again(run, tmp_path):
    """The reports only this zoo makes (the pictures of the labelled set, the engine preflight,
    the INT8 gate on built-in labels) rerun from their recorded command, with --out moved, to
    the same verdict."""
    from conftest import report_commands, reproduce_report

    _, workdir, _ = run
    reports = report_commands(workdir / "results", "tiny")
    assert {"pictures", "preflight", "int8-gate"} <= set(reports), sorted(reports)
    reproduce_report(workdir, reports["pictures"], tmp_path / "pictures", ("images", "detections"))
    reproduce_report(workdir, reports["preflight"], tmp_path / "preflight", ("ok", "findings"))
    reproduce_report(workdir, reports["int8-gate"], tmp_path / "gate", ("ok", "errors", "labelled"))


def test_each_module_edit_reruns_exactly_the_rules_that_run_it(run, tmp_path):
    code, workdir, rule_of = run
    ran = set(rule_of.values())
    assert {"export_pb", "patch_onnx", "check_int8_accuracy", "build_engine"} <= ran, ran
    modules = sorted((code / "trtflow").rglob("*.py"))
    second = _copy_code(tmp_path / "code2")  # two checkouts: two dry runs at once on 2 cores
    results: dict[str, set[str]] = {}

    def check(shard: list[Path], root: Path) -> None:
        for module in shard:
            path = root / module.relative_to(code)
            original = path.read_bytes()
            path.write_bytes(original + b"\n# edited by test_reruns\n")
            try:
                results[str(module.relative_to(code))] = _params_changed(root, workdir)
            finally:
                path.write_bytes(original)
                shutil.copystat(module, path)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(check, [modules[0::2], modules[1::2]], [code, second]))

    wrong = {}
    for module in modules:
        rel = str(module.relative_to(code))
        expected = _expected(code, module, ran)
        if results[rel] != expected:
            wrong[rel] = {"reran": sorted(results[rel]), "expected": sorted(expected)}
    assert not wrong, wrong
    for rel, rules in EXACT.items():
        assert results[rel] == rules & ran, (rel, results[rel])
    for rel, (must, must_not) in SOME.items():
        assert must & ran <= results[rel] and not (must_not & results[rel]), (rel, results[rel])
    # no rule's script runs the CLI, nor what rules/common.smk runs when it builds the DAG (the
    # config's defaults and a pb's input size reach the jobs as their params)
    scripts = sorted((REPO / "scripts").glob("*.py"))
    run_by_some = set().union(*(script_closure(s) for s in scripts))
    never = sorted(str(m.relative_to(code)) for m in modules if _name(code, m) not in run_by_some)
    assert never == [
        "trtflow/__main__.py",
        "trtflow/cli.py",
        "trtflow/core/codehash.py",
        "trtflow/tf/pbinfo.py",
    ]
