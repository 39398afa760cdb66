"""ONNX Runtime p50 of a built-in YOLOv5 (default yolov5s-640): raw tf2onnx vs patched vs TF.

Builds the model through the real stage functions in a temp dir, then times all three with the
same input, threads and iteration count, interleaved round by round so drift hits all equally.

    python bench/onnx_speed.py [--variant s] [--image-size 640] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(tmp: Path, variant: str, image_size: int) -> tuple[Path, Path, Path, dict]:
    from trtflow.core.config import default_recipe
    from trtflow.stages.convert import convert_pb_to_onnx
    from trtflow.stages.export import export_pb, export_saved_model
    from trtflow.stages.patch import patch_onnx

    sm = export_saved_model(tmp / "saved_model", "builtin", image_size, variant, 80, 0)
    man = export_pb(sm, tmp / "model.pb", "builtin", image_size)
    io = man["io"]
    convert_pb_to_onnx(tmp / "model.pb", tmp / "raw.onnx", io["input_name"], io["output_name"])
    patch_onnx(tmp / "raw.onnx", tmp / "patched.onnx", default_recipe(), image_size)
    return tmp / "model.pb", tmp / "raw.onnx", tmp / "patched.onnx", io


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="s")
    ap.add_argument("--image-size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from trtflow.core.stats import percentiles
    from trtflow.onnx.compare import errors, make_inputs
    from trtflow.onnx.ort import make_session
    from trtflow.tf.graph import FrozenGraphRunner

    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        pb, raw, patched, io = build(Path(d), args.variant, args.image_size)
        print(f"built yolov5{args.variant}-{args.image_size} in {time.time() - t0:.0f} s")
        x = make_inputs(1, args.image_size)
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        tf_run = FrozenGraphRunner(pb, io["input_name"], io["output_name"])
        # interleaved timing: no busy-waiting threads left behind by the previous runner
        s_raw = make_session(raw, args.threads, spinning=False)
        s_pat = make_session(patched, args.threads, spinning=False)
        runners = {
            "tensorflow (frozen pb)": lambda: tf_run(x),
            "onnxruntime raw tf2onnx": lambda: s_raw.run(None, {s_raw.get_inputs()[0].name: x})[0],
            "onnxruntime patched": lambda: s_pat.run(None, {"images": x_nchw})[0],
        }
        outs = {k: f() for k, f in runners.items()}
        for _ in range(args.warmup):
            for f in runners.values():
                f()
        lat: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.rounds):
            for k, f in runners.items():
                t = time.perf_counter()
                f()
                lat[k].append((time.perf_counter() - t) * 1e3)

    ref = outs["tensorflow (frozen pb)"]
    from trtflow.core.cpu import cpu_label

    print(f"\nCPU: {cpu_label()}; threads={args.threads} rounds={args.rounds} batch=1 "
          f"cpu_count={os.cpu_count()}")  # fmt: skip
    print(f"{'runtime':28s} {'p50 ms':>9s} {'p90 ms':>9s} {'max rel err vs TF':>18s}")
    stats = {k: percentiles(v) for k, v in lat.items()}
    for k in runners:
        rel = errors(outs[k], ref, 1e-3, 1e-4)["max_rel"]
        print(f"{k:28s} {stats[k]['p50_ms']:9.2f} {stats[k]['p90_ms']:9.2f} {rel:18.2e}")
    raw_p50 = stats["onnxruntime raw tf2onnx"]["p50_ms"]
    pat_p50 = stats["onnxruntime patched"]["p50_ms"]
    tf_p50 = stats["tensorflow (frozen pb)"]["p50_ms"]
    print(f"\npatched / raw p50 ratio: {pat_p50 / raw_p50:.3f}  (< 1 = patched faster)")
    print(f"patched / TF  p50 ratio: {pat_p50 / tf_p50:.3f}")


if __name__ == "__main__":
    main()
