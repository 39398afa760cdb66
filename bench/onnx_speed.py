"""ONNX Runtime p50 of YOLOv5 (yolov5s-640), raw tf2onnx vs patched, for both decode layouts.

Builds two frozen pbs of the same built-in network through the real stage functions: the built-in
model (rows ordered anchor, y, x; boxes in pixels) and the layout of other TF exporters (rows
y, x, anchor; boxes normalised to 0-1; batch fixed at 1; ``tests/pb_factory.py``). Each is
converted with tf2onnx and patched with the default recipe. Then all ONNX files are timed with
the same input, session options (``trtflow.onnx.ort.make_session``: ORT_ENABLE_ALL, no thread
spinning) and threads, interleaved run by run (raw, patched, raw, patched ...), so drift and
other load hit both alike. Each file gets ``--sessions`` ONNX Runtime sessions (3) and its p50 is
taken over the runs of all of them: two sessions of the same file differ by up to ~4 % p50 on a
2-core VM (where their buffers land), more than the patches change, so one session per file
measures the allocator as much as the graph. Prints the CPU, then per layout raw p50, patched
p50, their ratio, the spread of the per-round ratios (how noisy the machine was) and of the
per-session p50s.

    python bench/onnx_speed.py [--variant s] [--image-size 640] [--threads 2] [--rounds 30]
        [--sessions 3]
        [--workdir DIR]   # keep the built files there and reuse them on the next run
        [--tf]            # also time TensorFlow on the frozen pbs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LAYOUTS = ("anchor_y_x", "y_x_anchor")


def build(work: Path, layout: str, variant: str, image_size: int) -> dict[str, Any]:
    """pb, raw ONNX and patched ONNX of one layout in ``work`` (reused when already there)."""
    from trtflow.core.config import default_recipe
    from trtflow.core.manifest import read_json
    from trtflow.stages.convert import convert_pb_to_onnx
    from trtflow.stages.export import export_pb, export_saved_model
    from trtflow.stages.patch import patch_onnx

    d = work / f"yolov5{variant}-{image_size}-{layout}"
    d.mkdir(parents=True, exist_ok=True)
    pb, man = d / "model.pb", d / "model.pb.manifest.json"
    raw, patched = d / "raw.onnx", d / "patched.onnx"
    if not patched.is_file():
        if layout == "anchor_y_x":
            sm = export_saved_model(d / "saved_model", "builtin", image_size, variant, 80, 0)
            export_pb(sm, pb, "builtin", image_size, manifest_path=man)
        else:
            from tests.pb_factory import other_exporter_pb

            source = other_exporter_pb(d / "source.pb", image_size, 80, variant)
            export_pb(source, pb, "pb", image_size, manifest_path=man)
        io = read_json(man)["io"]
        convert_pb_to_onnx(pb, raw, io["input_name"], io["output_name"])
        patch_onnx(raw, patched, default_recipe(), image_size, pb_manifest=man)
    return {"pb": pb, "raw": raw, "patched": patched, "io": read_json(man)["io"]}


def time_interleaved(
    runners: dict[str, Any], warmup: int, rounds: int, gap_s: float
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process CPU time (ms) of each runner, one run of each per round, ``gap_s``
    before every run. Without thread spinning the CPU time counts the work done, not the
    waits for cores that other processes hold, so it is the steadier figure on a busy host."""
    for _ in range(warmup):
        for f in runners.values():
            f()
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, f in runners.items():
            time.sleep(gap_s)
            c, t = time.process_time(), time.perf_counter()
            f()
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((time.process_time() - c) * 1e3)
    return wall, cpu


def pool_sessions(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per file, the runs of all its sessions, round by round in the order they ran: key
    ``"<layout> <kind> #<i>"`` -> ``"<layout> <kind>"``."""
    pooled: dict[str, list[float]] = {}
    for key, values in times.items():
        pooled.setdefault(key.split(" #")[0], []).extend(values)
    return pooled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="s")
    ap.add_argument("--image-size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=3, help="ONNX Runtime sessions per file")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="idle time before every run")
    ap.add_argument("--workdir", type=Path, default=None, help="keep/reuse built files here")
    ap.add_argument("--tf", action="store_true", help="also time TensorFlow on the frozen pbs")
    args = ap.parse_args()

    from trtflow.core.cpu import cpu_label
    from trtflow.core.stats import percentiles
    from trtflow.onnx.compare import errors, make_inputs
    from trtflow.onnx.ort import make_session

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        t0 = time.time()
        built = {layout: build(work, layout, args.variant, args.image_size) for layout in LAYOUTS}
        print(f"built yolov5{args.variant}-{args.image_size}, both layouts, in "
              f"{time.time() - t0:.0f} s ({work})")  # fmt: skip
        x = make_inputs(1, args.image_size)
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        runners: dict[str, Any] = {}
        for layout, b in built.items():
            for kind in ("raw", "patched"):
                for i in range(args.sessions):
                    s = make_session(b[kind], args.threads, spinning=False)
                    name = s.get_inputs()[0].name
                    feed = {name: x if s.get_inputs()[0].shape[-1] == 3 else x_nchw}
                    runners[f"{layout} {kind} #{i}"] = lambda s=s, feed=feed: s.run(None, feed)[0]
            if args.tf:
                import tensorflow as tf

                from trtflow.tf.graph import FrozenGraphRunner

                tf.config.threading.set_intra_op_parallelism_threads(args.threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
                run_tf = FrozenGraphRunner(b["pb"], b["io"]["input_name"], b["io"]["output_name"])
                runners[f"{layout} tensorflow"] = lambda r=run_tf: r(x)
        outs = {k: f() for k, f in runners.items()}
        per_session, cpu_session = time_interleaved(
            runners, args.warmup, args.rounds, args.gap_ms / 1e3
        )
        lat, cpu = pool_sessions(per_session), pool_sessions(cpu_session)
        outs = {k.split(" #")[0]: v for k, v in outs.items()}

    print(f"\nCPU: {cpu_label()}; {os.cpu_count()} cores; onnxruntime threads={args.threads}, "
          f"no spinning, ORT_ENABLE_ALL; batch 1; {args.rounds} interleaved rounds")  # fmt: skip
    stats = {k: percentiles(v) for k, v in lat.items()}
    print("\n| decode layout | raw p50 ms | patched p50 ms | patched / raw | per-round ratio "
          "p25-p75 | per-session p50 ms raw; patched | CPU-time p50 ratio "
          "| max abs diff patched vs raw |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for layout in LAYOUTS:
        raw, pat = f"{layout} raw", f"{layout} patched"
        ratio = np.asarray(lat[pat]) / np.asarray(lat[raw])
        spread = "; ".join(
            "/".join(f"{np.median(v):.1f}" for k, v in per_session.items() if k.startswith(f))
            for f in (f"{raw} #", f"{pat} #")
        )
        ref = outs[raw]
        if layout == "y_x_anchor":  # raw emits 0-1 boxes; the patched ONNX pixels
            ref = ref * np.array([args.image_size] * 4 + [1] * (ref.shape[-1] - 4), np.float32)
        diff = errors(outs[pat], ref, 1e-3, 1e-4)["max_abs"]
        cpu_ratio = np.median(cpu[pat]) / np.median(cpu[raw])
        print(f"| {layout} | {stats[raw]['p50_ms']:.1f} | {stats[pat]['p50_ms']:.1f} | "
              f"{stats[pat]['p50_ms'] / stats[raw]['p50_ms']:.3f} | "
              f"{np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f} | {spread} | "
              f"{cpu_ratio:.3f} | {diff:.2g} |")  # fmt: skip
    if args.tf:
        for layout in LAYOUTS:
            k = f"{layout} tensorflow"
            print(f"{k}: p50 {stats[k]['p50_ms']:.1f} ms")


if __name__ == "__main__":
    main()
