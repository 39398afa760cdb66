"""``trtflow <stage> …`` / ``python -m trtflow <stage> …``: every stage without Snakemake.

Flags mirror the stage functions' arguments; the workflow is one way to call the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from trtflow.runner import run_stage


def _batch(value: str) -> int | str:
    return value if value == "dynamic" else int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtflow", description=__doc__)
    p.add_argument("--log", help="also write the log to this file")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("export-saved-model", help="Keras YOLOv5 -> TF SavedModel")
    s.add_argument("--out", required=True)
    s.add_argument("--source", default="builtin", choices=["builtin", "keras"])
    s.add_argument("--image-size", type=int, default=640)
    s.add_argument("--variant", default="s", choices=list("nsmlx"))
    s.add_argument("--classes", type=int, default=80)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--path", help="a .keras model or .weights.h5 file")

    s = sub.add_parser("export-pb", help="SavedModel -> frozen model.pb, or check a user's pb")
    s.add_argument("--source-path", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--source", default="builtin", choices=["builtin", "keras", "saved_model", "pb"])
    s.add_argument("--image-size", type=int, default=640)
    s.add_argument("--input-name")
    s.add_argument("--output-name")

    s = sub.add_parser("convert", help="model.pb -> ONNX (tf2onnx)")
    s.add_argument("--pb", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--input-name", help="default: from <pb>.manifest.json or discovered")
    s.add_argument("--output-name")

    s = sub.add_parser("patch", help="raw ONNX -> patched ONNX (a recipe of trtflow.patches)")
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--image-size", type=int, required=True)
    s.add_argument("--batch", type=_batch, default="dynamic")
    s.add_argument(
        "--recipe", default="nchw_input,fix_batch,rename_io,drop_noops,sanitize,int64_to_int32"
    )
    s.add_argument("--box-format", default="pixels", choices=["pixels", "normalized"])

    s = sub.add_parser("benchmark", help="ONNX Runtime CPU latency of an ONNX")
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--iterations", type=int, default=30)
    s.add_argument("--threads", type=int, default=0)

    sub.add_parser("patches", help="list the available patches")
    s = sub.add_parser("validate-config", help="validate a config file against the schema")
    s.add_argument("config")
    return p


def _pb_names(pb: str, input_name: str | None, output_name: str | None) -> tuple[str, str]:
    from pathlib import Path

    from trtflow import tfgraph
    from trtflow.manifest import read_json

    man = Path(f"{pb}.manifest.json")
    if man.is_file() and not (input_name or output_name):
        io = read_json(man)["io"]
        return io["input_name"], io["output_name"]
    return tfgraph.resolve_io(tfgraph.read_graph_def(pb), input_name, output_name, pb)


def dispatch(args: argparse.Namespace) -> Any:
    cmd = args.command
    if cmd == "export-saved-model":
        from trtflow.export import export_saved_model

        return export_saved_model(
            args.out, args.source, args.image_size, args.variant, args.classes, args.seed, args.path
        )
    if cmd == "export-pb":
        from trtflow.export import export_pb

        return export_pb(
            args.source_path, args.out, args.source, args.image_size, args.input_name,
            args.output_name,
        )  # fmt: skip
    if cmd == "convert":
        from trtflow.convert import check_opset, convert_pb_to_onnx

        check_opset(args.opset)
        ins, outs = _pb_names(args.pb, args.input_name, args.output_name)
        return convert_pb_to_onnx(args.pb, args.out, ins, outs, args.opset)
    if cmd == "patch":
        from trtflow.patch import patch_onnx

        return patch_onnx(
            args.onnx, args.out, args.recipe.split(","), args.image_size, args.batch,
            args.box_format,
        )  # fmt: skip
    if cmd == "benchmark":
        from trtflow.bench import benchmark_onnx

        return benchmark_onnx(
            args.onnx, args.out, args.batch, args.warmup, args.iterations, args.threads
        )
    if cmd == "patches":
        from trtflow.patches import describe_patches

        for name, doc in describe_patches().items():
            print(f"{name:18s} {doc}")
        return None
    if cmd == "validate-config":
        from trtflow.config import load_config

        load_config(args.config)
        print(f"{args.config}: valid")
        return None
    raise AssertionError(cmd)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    result = run_stage(lambda: dispatch(args), args.log)
    if isinstance(result, dict):
        json.dump({k: v for k, v in result.items() if k != "steps"}, sys.stdout, indent=2)
        print()
