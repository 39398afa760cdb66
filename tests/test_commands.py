"""The stage table: every rule has a CLI subcommand; flags, defaults and reproduce commands."""

from __future__ import annotations

import ast
import inspect
import re
import shlex

import pytest
from conftest import REPO

from trtflow.cli import _parser, stage_arguments
from trtflow.core.commands import (
    BY_COMMAND,
    BY_RULE,
    STAGES,
    cli_parameters,
    schema_entry,
    stage_command,
)
from trtflow.core.config import load_schema


def _rules() -> dict[str, str]:
    """rule name -> its script (rules/*.smk); rules without an action are aggregates."""
    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+)\.py"', m.group(2))
            out[m.group(1)] = script.group(1) if script else ""
    return out


def test_every_rule_has_a_subcommand():
    rules = _rules()
    assert len(rules) >= 24
    compute = {r for r, script in rules.items() if script}
    assert compute == set(rules), "every rule in rules/*.smk runs a script"
    assert compute - set(BY_RULE) == set(), "rules without a CLI subcommand"
    assert set(BY_RULE) - compute == set(), "table rows name rules that do not exist"
    aggregates = re.findall(r"^rule (\w+):", (REPO / "Snakefile").read_text(), re.M)
    assert not set(aggregates) & set(BY_RULE)


@pytest.mark.parametrize("rule", sorted(BY_RULE))
def test_the_rules_script_calls_the_tables_function(rule):
    """scripts/<rule>.py imports the function the table names for the rule."""
    module, _, name = BY_RULE[rule].function.partition(":")
    tree = ast.parse((REPO / "scripts" / f"{rule}.py").read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}  # fmt: skip
    assert (module, name) in imported


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.command)
def test_flags_mirror_the_signature_and_the_schema(stage):
    """One flag per parameter; a knob's default is the schema's, under the same name."""
    parser = _parser([stage.command])
    sub = parser._subparsers._group_actions[0].choices[stage.command]
    dests = {a.dest for a in sub._actions} - {"help"}
    params = {p.name: p for p in cli_parameters(stage)}
    assert dests == set(params)
    schema = load_schema()
    for name, key in stage.schema.items():
        assert name in params, f"{stage.command}: schema key {key} has no parameter {name}"
        assert key.rsplit(".", 1)[-1] == name, f"{key} is called {name} in the function"
        entry = schema_entry(schema, key)
        default = params[name].default
        if "default" in entry and default is not inspect.Parameter.empty:
            want = entry["default"]
            assert default == want or (not default and not want), (name, default, want)
    for p in params.values():
        flag = stage.flag(p.name)
        if flag != "--out" and p.name not in stage.flags:
            assert flag == "--" + p.name.replace("_", "-")


def test_stage_command_round_trips_through_the_cli():
    """Every value kind renders to flags that parse back to the same arguments."""
    args = {"onnx_in": "a b.onnx", "onnx_out": "out/p.onnx", "patches": ["nchw_input", "sanitize"],
            "image_size": 64, "batch": 2, "box_format": "normalized",
            "nms": {"score_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 7},
            "pb_manifest": "m.json"}  # fmt: skip
    argv = stage_command("patch", **args)
    assert argv[:2] == ["trtflow", "patch"]
    ns = _parser(argv[1:]).parse_args(shlex.split(shlex.join(argv[1:])))
    assert stage_arguments(BY_COMMAND["patch"], ns) == args

    argv = stage_command(
        "quantize",
        onnx_in="p.onnx",
        calib_npy="c.npy",
        onnx_out="q.onnx",
        ranges_out="r.json",
        float_decode=False,
        float_nodes=["*model.0*"],
    )
    assert "--no-float-decode" in argv and "--no-float-head-convs" in argv
    assert argv[argv.index("--method") + 1] == "minmax"  # defaults are written too
    ns = _parser(argv[1:]).parse_args(argv[1:])
    kwargs = stage_arguments(BY_COMMAND["quantize"], ns)
    assert kwargs["float_decode"] is False and kwargs["float_nodes"] == ["*model.0*"]

    with pytest.raises(TypeError, match="keep_decode_float"):
        stage_command("quantize", onnx_in="p", calib_npy="c", onnx_out="q", ranges_out="r",
                      keep_decode_float=True)  # fmt: skip
    with pytest.raises(TypeError, match="image_size is required"):
        stage_command("patch", onnx_in="a", onnx_out="b", patches=[])


def test_old_flags_still_parse():
    """The comma-separated --recipe of earlier versions is --patches."""
    ns = _parser(["patch"]).parse_args(
        ["patch", "--onnx", "a", "--out", "b", "--image-size", "64", "--recipe", "x,y"]
    )
    assert stage_arguments(BY_COMMAND["patch"], ns)["patches"] == ["x", "y"]
