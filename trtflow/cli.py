"""``trtflow <stage> …`` / ``python -m trtflow <stage> …``: every stage without Snakemake.

Flags mirror the stage functions' arguments; the workflow is one way to call the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from trtflow.core.config import default_recipe
from trtflow.core.runner import run_stage
from trtflow.tf.discover import BOX_FORMATS, DECODE_LAYOUTS


def _batch(value: str) -> int | str:
    return value if value == "dynamic" else int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtflow", description=__doc__)
    p.add_argument("--log", help="also write the log to this file")
    p.add_argument("--debug", action="store_true", help="print tracebacks on stderr too")
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
    s.add_argument("--image-size", type=int, help="default: the size the graph's input fixes")
    s.add_argument("--input-name")
    s.add_argument("--output-name")
    s.add_argument("--box-format", choices=BOX_FORMATS, help="default: discovered")
    s.add_argument("--decode-layout", choices=DECODE_LAYOUTS, help="default: discovered")

    s = sub.add_parser("convert", help="model.pb -> ONNX (tf2onnx)")
    s.add_argument("--pb", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--input-name", help="default: from <pb>.manifest.json or discovered")
    s.add_argument("--output-name")

    s = sub.add_parser("patch", help="raw ONNX -> patched ONNX (a recipe of trtflow.onnx.patches)")
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--image-size", type=int, required=True)
    s.add_argument("--batch", type=_batch, default="dynamic")
    s.add_argument(
        "--recipe", default=",".join(default_recipe()), help="comma-separated patch names"
    )
    s.add_argument("--box-format", choices=BOX_FORMATS, help="default: --pb-manifest's, or pixels")
    s.add_argument("--pb-manifest", help="export-pb's manifest (box format, decode layout)")

    s = sub.add_parser("benchmark", help="ONNX Runtime CPU latency of an ONNX")
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--iterations", type=int, default=30)
    s.add_argument("--threads", type=int, default=0)

    s = sub.add_parser("fp16", help="patched ONNX -> fp16 ONNX (onnxconverter-common; I/O fp32)")
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)

    _engine_parsers(sub)
    s = sub.add_parser("sample-images", help="write the built-in generated calibration scenes")
    s.add_argument("--out", required=True)
    s.add_argument("--count", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("calibrate", help="image folder -> calibration + held-aside arrays (.npy)")
    s.add_argument("--images", required=True, help="folder of JPEG/PNG images")
    s.add_argument("--out", required=True, help="calibration array (.npy)")
    s.add_argument("--holdout-out", required=True, help="held-aside array (.npy)")
    s.add_argument("--image-size", type=int, required=True)
    s.add_argument("--count", type=int, default=16)
    s.add_argument("--holdout", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sampling", default="random", choices=["random", "sorted", "spread"])

    s = sub.add_parser("quantize", help="patched ONNX -> Q/DQ INT8 ONNX (ONNX Runtime PTQ)")
    s.add_argument("--onnx", required=True)
    s.add_argument("--calib", required=True, help="calibration array from `trtflow calibrate`")
    s.add_argument("--out", required=True)
    s.add_argument("--ranges-out", required=True, help="activation ranges (JSON)")
    s.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    s.add_argument("--percentile", type=float, default=99.999)
    s.add_argument("--quantize-decode", action="store_true", help="quantize the decode too")
    s.add_argument("--float-head-convs", action="store_true", help="keep the head Convs float")
    s.add_argument("--float-node", action="append", default=[], help="node-name glob kept float")

    s = sub.add_parser("trt-cache", help="ranges JSON -> TensorRT implicit-INT8 calibration cache")
    s.add_argument("--ranges", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--trt-version", required=True, help="e.g. 8.6.1")
    s.add_argument("--algorithm", default="EntropyCalibration2")

    s = sub.add_parser("int8-gate", help="INT8 vs fp32 accuracy gate on held-aside images")
    s.add_argument("--fp32", required=True)
    s.add_argument("--int8", required=True)
    s.add_argument("--holdout", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--score-threshold", type=float, default=0.25)
    s.add_argument("--top-k", type=int, default=100)
    s.add_argument("--iou-threshold", type=float, default=0.45)
    s.add_argument("--max-detections", type=int, default=300)
    s.add_argument("--min-map50-vs-fp32", type=float, default=0.5)
    s.add_argument("--eval-images")
    s.add_argument("--eval-annotations")
    s.add_argument("--eval-count", type=int, default=0)
    s.add_argument("--max-map-drop", type=float, default=0.02)
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--max-map50-drop", type=float, default=0.01)

    s = sub.add_parser("benchmark-int8", help="INT8 vs fp32 ONNX Runtime CPU latency, side by side")
    s.add_argument("--fp32", required=True)
    s.add_argument("--int8", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--iterations", type=int, default=20)
    s.add_argument("--threads", type=int, default=0)

    _train_parsers(sub)
    sub.add_parser("patches", help="list the available patches")
    s = sub.add_parser("validate-config", help="validate a config file against the schema")
    s.add_argument("config")
    return p


def _pb_names(pb: str, input_name: str | None, output_name: str | None) -> tuple[str, str]:
    from pathlib import Path

    from trtflow.core.manifest import read_json
    from trtflow.tf import graph as tfgraph

    man = Path(f"{pb}.manifest.json")
    if man.is_file() and not (input_name or output_name):
        io = read_json(man)["io"]
        return io["input_name"], io["output_name"]
    return tfgraph.resolve_io(tfgraph.read_graph_def(pb), input_name, output_name, pb)


INT8_COMMANDS = (
    "sample-images",
    "calibrate",
    "quantize",
    "trt-cache",
    "int8-gate",
    "benchmark-int8",
)


def _dispatch_int8(args: argparse.Namespace) -> Any:
    cmd = args.command
    if cmd == "sample-images":
        from trtflow.stages.quantize import make_sample_images

        return make_sample_images(args.out, args.count, args.seed)
    if cmd == "calibrate":
        from trtflow.stages.quantize import make_calibration_data

        return make_calibration_data(
            args.images, args.out, args.holdout_out, args.image_size, args.count, args.holdout,
            args.seed, args.sampling,
        )  # fmt: skip
    if cmd == "quantize":
        from trtflow.stages.quantize import quantize_onnx

        return quantize_onnx(
            args.onnx, args.calib, args.out, args.ranges_out, args.method, args.percentile,
            not args.quantize_decode, args.float_head_convs, args.float_node,
        )  # fmt: skip
    if cmd == "trt-cache":
        from trtflow.stages.quantize import write_trt_calibration_cache

        return write_trt_calibration_cache(args.ranges, args.out, args.trt_version, args.algorithm)
    if cmd == "int8-gate":
        from trtflow.stages.quantize import check_int8_accuracy

        return check_int8_accuracy(
            args.fp32, args.int8, args.holdout, args.out, args.score_threshold, args.top_k,
            args.iou_threshold, args.max_detections, args.min_map50_vs_fp32, args.eval_images,
            args.eval_annotations, args.eval_count, args.max_map_drop, args.threads,
            args.max_map50_drop,
        )  # fmt: skip
    from trtflow.stages.quantize import benchmark_int8

    report = benchmark_int8(
        args.fp32, args.int8, args.out, args.batch, args.warmup, args.iterations, args.threads
    )
    return {k: v for k, v in report.items() if k not in ("latencies_ms", "stats")}


def dispatch(args: argparse.Namespace) -> Any:
    cmd = args.command
    if cmd == "export-saved-model":
        from trtflow.stages.export import export_saved_model

        return export_saved_model(
            args.out, args.source, args.image_size, args.variant, args.classes, args.seed, args.path
        )
    if cmd == "export-pb":
        from trtflow.stages.export import export_pb

        return export_pb(
            args.source_path, args.out, args.source, args.image_size, args.input_name,
            args.output_name, box_format=args.box_format, decode_layout=args.decode_layout,
        )  # fmt: skip
    if cmd == "convert":
        from trtflow.stages.convert import check_opset, convert_pb_to_onnx

        check_opset(args.opset)
        ins, outs = _pb_names(args.pb, args.input_name, args.output_name)
        return convert_pb_to_onnx(args.pb, args.out, ins, outs, args.opset)
    if cmd == "patch":
        from trtflow.stages.patch import patch_onnx

        return patch_onnx(
            args.onnx, args.out, args.recipe.split(","), args.image_size, args.batch,
            args.box_format, pb_manifest=args.pb_manifest,
        )  # fmt: skip
    if cmd == "benchmark":
        from trtflow.stages.benchmark import benchmark_onnx

        return benchmark_onnx(
            args.onnx, args.out, args.batch, args.warmup, args.iterations, args.threads
        )
    if cmd == "fp16":
        from trtflow.stages.fp16 import convert_onnx_to_fp16

        return convert_onnx_to_fp16(args.onnx, args.out)
    if cmd in INT8_COMMANDS:
        return _dispatch_int8(args)
    if cmd == "patches":
        from trtflow.onnx.patches.registry import describe_patches

        for name, doc in describe_patches().items():
            print(f"{name:18s} {doc}")
        return None
    if cmd == "validate-config":
        from trtflow.core.config import load_config

        load_config(args.config)
        print(f"{args.config}: valid")
        return None
    if cmd in ENGINE_COMMANDS:
        return _engine_dispatch(args)
    if cmd in TRAIN_COMMANDS:
        return _train_dispatch(args)
    raise AssertionError(cmd)


# ---------------------------------------------------------------- engine stage (TensorRT targets)
ENGINE_COMMANDS = ("preflight", "build-engine", "benchmark-engine", "check-engine-parity")


def _engine_parsers(sub: Any) -> None:
    def target_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--config", default="config.yaml", help="config with the targets table")
        s.add_argument("--target", required=True, help="a name under targets:")

    s = sub.add_parser("preflight", help="check a patched ONNX against a TensorRT version")
    s.add_argument("--onnx", required=True)
    s.add_argument("--tensorrt", required=True, help='e.g. "8.2.1" or "10.3"')
    s.add_argument("--dynamic", action="store_true", help="a dynamic batch profile is built")
    s.add_argument(
        "--backend",
        default="trtexec",
        help="the target's backend (tensorrt-rtx: "
        "--tensorrt is the TensorRT-RTX version, checked by its real parser)",
    )
    s.add_argument(
        "--source",
        action="append",
        default=[],
        help="another ONNX the target builds (Q/DQ, fp16): parsed too (repeatable)",
    )
    s.add_argument("--out", help="write the JSON report here")

    s = sub.add_parser("build-engine", help="patched ONNX -> TensorRT engine on a target")
    target_args(s)
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8", "best"])
    s.add_argument("--profile", default="b1", help="b<N> (static) or b<min>-<opt>-<max>")
    s.add_argument("--image-size", type=int, required=True)
    s.add_argument("--timing-cache")
    s.add_argument("--calibration-cache")
    s.add_argument("--qdq-onnx")
    s.add_argument("--fp16-onnx", help="fp16 ONNX of fp16 engines on TensorRT-RTX targets")

    s = sub.add_parser("benchmark-engine", help="time an engine on its target (trtexec)")
    target_args(s)
    s.add_argument("--engine", required=True, help="engine with its .manifest.json next to it")
    s.add_argument("--out", required=True)
    s.add_argument("--warmup-ms", type=int, default=200)
    s.add_argument("--iterations", type=int, default=100)
    s.add_argument("--duration-s", type=int, default=0)
    s.add_argument("--use-cuda-graph", action="store_true")
    s.add_argument("--no-data-transfers", action="store_true")

    s = sub.add_parser("check-engine-parity", help="engine outputs vs ONNX Runtime")
    target_args(s)
    s.add_argument("--engine", required=True, help="engine with its .manifest.json next to it")
    s.add_argument("--onnx", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)


def _engine_dispatch(args: argparse.Namespace) -> Any:
    from trtflow.core.config import load_config
    from trtflow.stages import engine
    from trtflow.stages.engine import preflight
    from trtflow.trt.targets import target_spec

    if args.command == "preflight":
        return preflight(args.onnx, args.out, args.tensorrt, dynamic=args.dynamic,
                         backend=args.backend, sources=args.source)  # fmt: skip
    config = load_config(args.config)
    spec = target_spec(config["targets"], args.target)
    if args.command == "build-engine":
        return engine.build_engine(
            args.onnx, args.out, target=args.target, spec=spec, precision=args.precision,
            profile=args.profile, image_size=args.image_size, timing_cache=args.timing_cache,
            calibration_cache=args.calibration_cache, qdq_onnx=args.qdq_onnx,
            fp16_onnx=args.fp16_onnx,
        )  # fmt: skip
    manifest = f"{args.engine}.manifest.json"
    if args.command == "benchmark-engine":
        return engine.benchmark_engine(
            args.engine, manifest, args.out, target=args.target, spec=spec,
            warmup_ms=args.warmup_ms, iterations=args.iterations, duration_s=args.duration_s,
            use_cuda_graph=args.use_cuda_graph, no_data_transfers=args.no_data_transfers,
        )  # fmt: skip
    return engine.check_engine_parity(
        args.engine, manifest, args.onnx, args.out, target=args.target, spec=spec,
        tolerance=config["engine"]["parity"]["tolerance"], seed=args.seed,
    )  # fmt: skip


# ---------------------------------------------------------------- training (train host)
TRAIN_COMMANDS = ("dataset", "train", "pictures")


def _train_parsers(sub: Any) -> None:
    s = sub.add_parser("dataset", help="write the built-in labelled shapes set (YOLO + COCO)")
    s.add_argument("--out", required=True)
    s.add_argument("--train-count", type=int, default=6000)
    s.add_argument("--val-count", type=int, default=500)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=0, help="threads (0 = one per CPU)")

    s = sub.add_parser("train", help="train the built-in YOLOv5 (YOLO folder or COCO JSON)")
    s.add_argument("--train-data", required=True, help="YOLO images folder or COCO JSON")
    s.add_argument("--val-data", required=True, help="YOLO images folder or COCO JSON")
    s.add_argument("--out", required=True, help="EMA weights, <name>.weights.h5")
    s.add_argument("--variant", default="n", choices=list("nsmlx"))
    s.add_argument("--classes", type=int, default=8)
    s.add_argument("--image-size", type=int, default=320)
    s.add_argument("--epochs", type=int, default=40)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=8, help="augmentation threads")
    s.add_argument("--linear-lr", action="store_true", help="linear lr schedule (default cosine)")
    s.add_argument("--max-steps", type=int, default=0, help="steps per epoch at most (0 = all)")
    s.add_argument("--val-count", type=int, default=0, help="validation images (0 = all)")
    s.add_argument("--val-interval", type=int, default=10)
    s.add_argument("--hyp", action="append", default=[], help="recipe override KEY=VALUE")
    s.add_argument("--checkpoint", help="resume state (default <out>.ckpt.npz)")

    s = sub.add_parser("pictures", help="labelled images with TF / fp32 / INT8 detections drawn")
    s.add_argument("--pb", required=True, help="model.pb with its .manifest.json next to it")
    s.add_argument("--fp32", required=True)
    s.add_argument("--int8", required=True)
    s.add_argument("--images", required=True, help="folder the COCO file names are relative to")
    s.add_argument("--annotations", required=True, help="COCO instances JSON")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--image-size", type=int, required=True)
    s.add_argument("--count", type=int, default=4)
    s.add_argument("--score-threshold", type=float, default=0.25)


def _train_dispatch(args: argparse.Namespace) -> Any:
    if args.command == "dataset":
        from trtflow.stages.train import make_dataset

        return make_dataset(args.out, args.train_count, args.val_count, args.seed, args.workers)
    if args.command == "pictures":
        from trtflow.stages.pictures import render_pictures

        return render_pictures(
            args.pb, f"{args.pb}.manifest.json", args.fp32, args.int8, args.images,
            args.annotations, args.out, args.image_size, args.count, args.score_threshold,
        )  # fmt: skip
    from trtflow.core.errors import TrtflowError
    from trtflow.stages.train import train_yolov5

    hyp = {}
    for item in args.hyp:
        key, sep, value = item.partition("=")
        try:
            hyp[key] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise TrtflowError(f"--hyp {item!r} is not KEY=NUMBER", "e.g. --hyp lr0=0.02")
    report = train_yolov5(
        args.train_data, args.val_data, args.out, args.variant, args.classes, args.image_size,
        args.epochs, args.batch, args.seed, args.workers, not args.linear_lr, args.max_steps,
        args.val_count, args.val_interval, hyp, args.checkpoint,
    )  # fmt: skip
    return report["final"]


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    result = run_stage(lambda: dispatch(args), args.log, debug=args.debug)
    if isinstance(result, dict):
        json.dump({k: v for k, v in result.items() if k != "steps"}, sys.stdout, indent=2)
        print()
