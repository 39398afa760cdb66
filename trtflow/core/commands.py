"""The table of stage commands: one row per CLI subcommand, the rules it serves, its function.

``trtflow.cli`` generates its argparse subcommands from this table and the functions'
signatures (one flag per parameter: ``image_size`` -> ``--image-size``); each stage writes the
``command`` of its manifest with :func:`stage_command`, from the same table, so the recorded line
is the CLI call that reproduces the artifact. Nothing here imports a stage: a row names its
function as ``"module:function"``, imported when the command runs (or, in ``stage_command``,
found among the modules already loaded: the stage calling it).

Standard library only, so every stage can import it without widening its import closure.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Parameters no CLI shows: where the manifest goes (always ``<out>.manifest.json`` from the
#: CLI) and callbacks.
HIDDEN = ("manifest_path", "on_epoch")


@dataclass(frozen=True)
class Stage:
    """One subcommand: ``trtflow <command>`` calls ``function`` with one flag per parameter.

    ``out`` is the parameter written as ``--out`` (the artifact, so a reproduce command's output
    is always replaceable); ``outputs`` every parameter that names a written path. ``flags``
    keeps the flag names users know for some parameters (``onnx_in`` -> ``--onnx``);
    ``aliases`` more flags of a parameter. ``schema`` maps a parameter to its config key (dotted,
    through ``properties``/``$defs``): the flag takes its help, choices and default from the
    schema, the one home of a knob. ``derived``: a parameter left out defaults to this format of
    the other arguments (``"{pb}.manifest.json"``). ``hidden``: parameters the CLI resolves
    (``resolve``, ``"module:function"`` of ``(stage, kwargs) -> kwargs``) instead of taking a
    flag. ``split_commas``: list parameters whose words may also be comma-separated (old CLI
    spellings); ``command_aliases``: more names of the subcommand.
    """

    command: str
    rules: tuple[str, ...]
    function: str
    out: str | None = None
    outputs: tuple[str, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    schema: Mapping[str, str] = field(default_factory=dict)
    derived: Mapping[str, str] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()
    resolve: str | None = None
    split_commas: tuple[str, ...] = ()
    command_aliases: tuple[str, ...] = ()

    def flag(self, param: str) -> str:
        """The flag of ``param`` (``--out`` for the artifact)."""
        if param == self.out:
            return "--out"
        return "--" + self.flags.get(param, param.replace("_", "-"))

    def is_cli(self, param: str) -> bool:
        return param not in HIDDEN and param not in self.hidden

    def load(self) -> Any:
        """The stage function (imports its module)."""
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


def _target_context(stage_rules: tuple[str, ...]) -> dict[str, Any]:
    """Row fields of the engine stages: the target comes from ``--config`` + ``--target``."""
    return {"rules": stage_rules, "hidden": ("spec", "tolerance"),
            "resolve": "trtflow.cli:resolve_target"}  # fmt: skip


PB_MANIFEST = {"pb_manifest": "{pb}.manifest.json"}
ENGINE_MANIFEST = {"engine_manifest": "{engine_path}.manifest.json"}

STAGES: tuple[Stage, ...] = (
    Stage(
        "export-saved-model", ("export_saved_model",), "trtflow.stages.export:export_saved_model",
        out="out_dir", outputs=("out_dir",),
        schema={"source": "model.source", "variant": "model.variant", "classes": "model.classes",
                "seed": "model.seed", "path": "model.path"},
    ),
    Stage(
        "export-pb", ("export_pb",), "trtflow.stages.export:export_pb",
        out="out_pb", outputs=("out_pb",),
        schema={"source": "model.source", "input_name": "model.input_name",
                "output_name": "model.output_name", "box_format": "model.box_format",
                "decode_layout": "model.decode_layout"},
    ),
    Stage(
        "convert", ("convert_pb_to_onnx",), "trtflow.stages.convert:convert_pb_to_onnx",
        out="out_onnx", outputs=("out_onnx",), schema={"opset": "onnx.opset"},
        derived=PB_MANIFEST,
    ),
    Stage(
        "patch", ("patch_onnx",), "trtflow.stages.patch:patch_onnx",
        out="onnx_out", outputs=("onnx_out",), flags={"onnx_in": "onnx"},
        aliases={"patches": ("--recipe",)}, split_commas=("patches",),
        schema={"patches": "model.patches", "batch": "model.batch",
                "box_format": "model.box_format", "nms": "model.nms"},
    ),
    Stage(
        "parity", ("check_parity",), "trtflow.stages.parity:check_parity",
        out="out_json", outputs=("out_json",),
        flags={"raw_onnx": "raw", "patched_onnx": "patched"},
        derived={**PB_MANIFEST, "patched_manifest": "{patched_onnx}.manifest.json"},
        schema={"seed": "parity.seed", "batch": "parity.batch", "atol": "parity.atol",
                "rtol": "parity.rtol", "box_format": "model.box_format"},
    ),
    Stage(
        "benchmark", ("benchmark_onnx",), "trtflow.stages.benchmark:benchmark_onnx",
        out="out_json", outputs=("out_json",), flags={"onnx_path": "onnx"},
        schema={"warmup": "benchmark.warmup", "iterations": "benchmark.iterations",
                "threads": "benchmark.threads"},
    ),
    Stage(
        "fp16", ("convert_onnx_to_fp16",), "trtflow.stages.fp16:convert_onnx_to_fp16",
        out="onnx_out", outputs=("onnx_out",), flags={"onnx_in": "onnx"},
    ),
    Stage(
        "sample-images", ("make_sample_images",), "trtflow.stages.quantize:make_sample_images",
        out="out_dir", outputs=("out_dir",),
    ),
    Stage(
        "calibrate", ("make_calibration_data",), "trtflow.stages.quantize:make_calibration_data",
        out="calib_npy", outputs=("calib_npy", "holdout_npy"),
        flags={"holdout_npy": "holdout-out"},
        schema={"images": "calibration.images", "count": "calibration.count",
                "holdout": "calibration.holdout", "seed": "calibration.seed",
                "sampling": "calibration.sampling"},
    ),
    Stage(
        "quantize", ("quantize_onnx",), "trtflow.stages.quantize:quantize_onnx",
        out="onnx_out", outputs=("onnx_out", "ranges_out"),
        flags={"onnx_in": "onnx", "calib_npy": "calib"}, aliases={"float_nodes": ("--float-node",)},
        schema={"method": "int8.method", "percentile": "int8.percentile",
                "float_decode": "int8.float_decode", "float_head_convs": "int8.float_head_convs",
                "float_nodes": "int8.float_nodes"},
    ),
    Stage(
        "trt-cache", ("write_calibration_cache",),
        "trtflow.stages.quantize:write_trt_calibration_cache",
        out="cache_out", outputs=("cache_out",), flags={"ranges_json": "ranges"},
        aliases={"trt_cache_algorithm": ("--algorithm",)},
        schema={"trt_cache_algorithm": "int8.trt_cache_algorithm"},
    ),
    Stage(
        "int8-gate", ("check_int8_accuracy",), "trtflow.stages.quantize:check_int8_accuracy",
        out="out_json", outputs=("out_json",),
        flags={"fp32_onnx": "fp32", "int8_onnx": "int8", "holdout_npy": "holdout"},
        schema={k: f"int8.gate.{k}" for k in (
            "score_threshold", "top_k", "iou_threshold", "max_detections", "min_map50_vs_fp32",
            "eval_images", "eval_annotations", "eval_count", "max_map_drop", "max_map50_drop")},
    ),
    Stage(
        "benchmark-int8", ("benchmark_int8",), "trtflow.stages.quantize:benchmark_int8",
        out="out_json", outputs=("out_json",), flags={"fp32_onnx": "fp32", "int8_onnx": "int8"},
        schema={"warmup": "benchmark.warmup", "iterations": "benchmark.iterations",
                "threads": "benchmark.threads"},
    ),
    Stage(
        "pictures", ("render_pictures",), "trtflow.stages.pictures:render_pictures",
        out="out_dir", outputs=("out_dir",), flags={"fp32_onnx": "fp32", "int8_onnx": "int8"},
        derived=PB_MANIFEST,
    ),
    Stage(
        "preflight", ("preflight_engine",), "trtflow.stages.engine:preflight",
        out="out_json", outputs=("out_json",), flags={"onnx_path": "onnx"},
        aliases={"sources": ("--source",)},
        schema={"backend": "targets.*.backend"},
    ),
    Stage(
        "build-engine", **_target_context(("build_engine",)),
        function="trtflow.stages.engine:build_engine",
        out="engine_path", outputs=("engine_path",), flags={"onnx_path": "onnx"},
        schema={"precision": "precision"},
    ),
    Stage(
        "benchmark-engine", **_target_context(("benchmark_engine",)),
        function="trtflow.stages.engine:benchmark_engine",
        out="out_json", outputs=("out_json",), flags={"engine_path": "engine"},
        derived=ENGINE_MANIFEST,
        schema={k: f"engine.benchmark.{k}" for k in (
            "warmup_ms", "iterations", "duration_s", "use_cuda_graph", "no_data_transfers",
            "profile_layers")},
    ),
    Stage(
        "check-engine-parity", **_target_context(("check_engine_parity",)),
        function="trtflow.stages.engine:check_engine_parity",
        out="out_json", outputs=("out_json",),
        flags={"engine_path": "engine", "onnx_path": "onnx"}, derived=ENGINE_MANIFEST,
        schema={"seed": "engine.parity.seed"},
    ),
    Stage(
        "summary", ("render_summary",), "trtflow.stages.report:render_summary",
        out="csv_path", outputs=("csv_path", "md_path"), flags={"md_path": "md"},
    ),
    Stage(
        "engine-summary", ("render_engine_summary",),
        "trtflow.stages.report:render_engine_summary",
        out="csv_path", outputs=("csv_path", "md_path"), flags={"md_path": "md"},
    ),
    Stage(
        "report", ("render_report",), "trtflow.stages.report:render_report",
        out="zoo_html", outputs=("zoo_html", "plots", "models_dir", "targets_dir"),
    ),
    Stage(
        "gates", ("check_gates",), "trtflow.stages.report:check_gates",
        out="out_json", outputs=("out_json",),
    ),
    Stage(
        "dataset", ("make_dataset",), "trtflow.stages.train:make_dataset",
        out="out_dir", outputs=("out_dir",),
        schema={"train_count": "dataset.train_count", "val_count": "dataset.val_count",
                "seed": "dataset.seed"},
    ),
    Stage(
        "train", ("train_model",), "trtflow.stages.train:train_yolov5",
        out="out_weights", outputs=("out_weights",),
        schema={"train_data": "train.train_data", "val_data": "train.val_data",
                "epochs": "train.epochs", "batch": "train.batch", "seed": "train.seed",
                "cos_lr": "train.cos_lr", "val_interval": "train.val_interval",
                "hyp": "train.hyp"},
    ),
)  # fmt: skip

BY_COMMAND: dict[str, Stage] = {name: s for s in STAGES for name in (s.command, *s.command_aliases)}
BY_RULE: dict[str, Stage] = {rule: s for s in STAGES for rule in s.rules}


def cli_parameters(stage: Stage) -> list[inspect.Parameter]:
    """The parameters of ``stage``'s function that are flags, in signature order."""
    params = inspect.signature(stage.load()).parameters.values()
    return [
        p for p in params
        if stage.is_cli(p.name) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]  # fmt: skip


def render_value(value: Any) -> list[str]:
    """A value as the argv words after its flag (lists: one word each; dicts: KEY=VALUE)."""
    if isinstance(value, Mapping):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def stage_command(command: str, **arguments: Any) -> list[str]:
    """The ``trtflow <command> …`` argv that calls the stage with ``arguments``.

    Every flag parameter is written, those left out with their default (so a later change of a
    default does not change what the line reproduces); ``None`` is left out (it is the default
    of every optional flag), booleans are ``--x`` / ``--no-x``. Unknown names are an error.
    """
    stage = BY_COMMAND[command]
    params = {p.name: p for p in cli_parameters(stage)}
    unknown = set(arguments) - set(params) - set(HIDDEN) - set(stage.hidden)
    if unknown:
        raise TypeError(f"stage_command({command!r}): no parameter(s) {sorted(unknown)}")
    argv = ["trtflow", command]
    for name, p in params.items():
        if name in arguments:
            value = arguments[name]
        elif p.default is not inspect.Parameter.empty:
            value = p.default
        else:
            raise TypeError(f"stage_command({command!r}): {name} is required")
        flag = stage.flag(name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, (list, tuple, Mapping)) and not value:
            continue  # an empty list or mapping: the default of every list/mapping flag
        else:
            argv += [flag, *render_value(value)]
    return argv


def report_command(command: str, arguments: Mapping[str, Any]) -> str:
    """The ``trtflow <command> …`` line that writes a stage's JSON report again, from the stage
    function's own arguments (``dict(locals())`` as its first statement); those that are not
    flags of ``command`` (the workflow's ``enforce``) are left out."""
    from trtflow.core.manifest import command_line

    names = {p.name for p in cli_parameters(BY_COMMAND[command])}
    return command_line(
        stage_command(command, **{k: v for k, v in arguments.items() if k in names})
    )


def out_flags(stage: Stage) -> list[str]:
    """The flags that name written paths (tests redirect them)."""
    return [stage.flag(p) for p in stage.outputs]


def schema_entry(schema: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The schema node of a dotted config key (``int8.gate.top_k``; ``model.x`` and other
    first words that are ``$defs`` names look there; ``*`` is any entry of a mapping)."""
    node: Any = schema
    for i, part in enumerate(key.split(".")):
        if "$ref" in node:
            node = _ref(schema, node["$ref"])
        if i == 0 and part in schema.get("$defs", {}):
            node = schema["$defs"][part]
        elif part == "*":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    if "$ref" in node:
        node = {**_ref(schema, node["$ref"]), **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _ref(schema: Mapping[str, Any], ref: str) -> Any:
    node: Any = schema
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node
