"""Profiles under profiles/ agree with the rules' host roles (no services needed).

Rules carry ``resources: host_role=ROLE_<X>``; profiles route by rule name (Slurm
set-resources, host profiles' allowed-rules). These tests are the contract between the two: a
new rule fails here until the profiles route it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from trtflow.core import codehash

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
PROFILE_NAMES = ["default", "local", "slurm", "s3", "train", "convert", "device"]
# Aggregate targets (Snakefile) each host profile may run besides its role's rules.
HOST_PROFILES = {
    "train": ("train", {"pb", "train"}),
    "convert": ("convert", {"onnx", "parity", "benchmark", "report", "preflight", "int8"}),
    "device": ("target", {"engine"}),
}
POSIX_ONLY_MODULES = {"fcntl", "grp", "posix", "pwd", "resource", "termios", "pty"}


def rule_blocks() -> dict[str, str]:
    """Rule name -> the text of its block, for every rule of rules/*.smk."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", smk.read_text(), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            blocks[name] = body
    return blocks


def host_roles() -> dict[str, str]:
    roles = {}
    for name, body in rule_blocks().items():
        m = re.search(r"host_role=ROLE_(\w+)", body)
        roles[name] = m.group(1).lower() if m else ""
    return roles


def aggregate_rules() -> set[str]:
    return set(re.findall(r"^rule (\w+):", (REPO / "Snakefile").read_text(), flags=re.M))


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.v8+.yaml").read_text())


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profile_is_snakemake9_format_and_shows_failed_logs(name):
    cfg = profile(name)
    assert cfg["show-failed-logs"] is True
    assert cfg["rerun-incomplete"] is True
    if name not in ("default", "local", "slurm"):
        assert cfg["default-storage-provider"] == "s3"
        assert cfg["default-storage-prefix"].startswith("s3://$TRTFLOW_BUCKET/")
        # credentials and endpoint only from the environment
        assert not any(k.startswith("storage-s3") for k in cfg), cfg


def test_every_rule_has_a_host_role():
    roles = host_roles()
    assert roles
    missing = sorted(r for r, role in roles.items() if role not in ("train", "convert", "target"))
    assert not missing, f"rules without resources: host_role=ROLE_TRAIN/CONVERT/TARGET: {missing}"


def test_slurm_profile_routes_target_rules_to_the_gpu_partition():
    cfg = profile("slurm")
    assert cfg["executor"] == "slurm"
    assert cfg["default-resources"]["slurm_partition"] == "cpu"
    routed = cfg.get("set-resources", {})
    roles = host_roles()
    stale = sorted(set(routed) - set(roles))
    assert not stale, f"profiles/slurm set-resources names rules that do not exist: {stale}"
    for rule, role in roles.items():
        res = routed.get(rule, {})
        if role == "target":
            assert res.get("slurm_partition") == "gpu" and "gpu" in str(res.get("gres")), (
                f"profiles/slurm: add `{rule}: {{slurm_partition: gpu, gres: gpu:1}}` "
                "to set-resources (it is a target-role rule)"
            )
        else:
            assert res.get("slurm_partition", "cpu") == "cpu", f"{rule} ({role}) is not a GPU job"


@pytest.mark.parametrize("host", sorted(HOST_PROFILES))
def test_host_profile_allows_exactly_its_roles_rules(host):
    role, aggregates = HOST_PROFILES[host]
    expected = {r for r, rl in host_roles().items() if rl == role} | aggregates
    assert aggregates <= aggregate_rules(), "an aggregate target is missing from the Snakefile"
    allowed = set(profile(host)["allowed-rules"])
    assert allowed == expected, (
        f"profiles/{host} allowed-rules: add {sorted(expected - allowed)}, "
        f"remove {sorted(allowed - expected)}"
    )


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_train_rules_run_on_windows():
    """The train host is often Windows: its rules use `script:` (no shell), and the scripts
    and the trtflow modules they load import no POSIX-only module."""
    blocks = rule_blocks()
    train = [r for r, role in host_roles().items() if role == "train"]
    assert train
    modules: set[str] = set()
    for rule in train:
        body = blocks[rule]
        assert "script:" in body and "shell:" not in body and "run:" not in body, rule
        script = REPO / "scripts" / re.search(r'"\.\./scripts/(\w+\.py)"', body).group(1)
        assert not _imports(script) & POSIX_ONLY_MODULES, script
        modules |= set(codehash.script_closure(script))  # every trtflow module the job runs
    assert "trtflow.tf.training" in modules and "trtflow.core.runner" in modules
    for mod in sorted(modules):
        path = codehash._module_file(mod)
        assert not _imports(path) & POSIX_ONLY_MODULES, path
        text = path.read_text()
        assert not re.search(r"""["'](/tmp|/dev/|/proc/)""", text), f"{path}: POSIX-only path"
        assert "shell=True" not in text, path
