"""INT8 (Q/DQ) vs fp32 patched ONNX on this CPU, side by side in one run.

    python benchmarks/int8_speedup.py --fp32 results/patched/yolov5s/640/model.onnx \\
        --int8 results/int8/yolov5s/640/model.qdq.onnx --threads 1,2 --iterations 30

Both models run in ONNX Runtime (CPU) with the same session options and threads, timed in
alternation (trtflow.int8_bench.compare_speed). Prints one table row per (threads, model) and
the speedup (fp32 p50 / INT8 p50); exits 1 if a speedup is below --min-speedup.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trtflow.int8_bench import compare_speed, cpu_int8_flags  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fp32", required=True, help="patched fp32 ONNX")
    p.add_argument("--int8", required=True, help="Q/DQ ONNX from quantize_onnx")
    p.add_argument("--threads", default="1", help="comma-separated intra-op thread counts")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--min-speedup", type=float, default=0.0)
    args = p.parse_args(argv)

    import onnxruntime

    print(f"CPU INT8 extensions: {', '.join(cpu_int8_flags()) or 'none'}; "
          f"onnxruntime {onnxruntime.__version__}; batch {args.batch}, "
          f"{args.iterations} alternating iterations after {args.warmup} warm-up")  # fmt: skip
    print("| threads | model | p50 ms | p90 ms | min ms | speedup (p50) |")
    print("|---|---|---|---|---|---|")
    worst = float("inf")
    for threads in (int(t) for t in args.threads.split(",")):
        r = compare_speed(args.fp32, args.int8, args.batch, args.warmup, args.iterations, threads)
        for key in ("fp32", "int8"):
            s = r["stats"][key]
            speed = f"{r['speedup']:.2f}x" if key == "int8" else ""
            print(f"| {threads} | {key} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | "
                  f"{s['min_ms']:.1f} | {speed} |")  # fmt: skip
        worst = min(worst, r["speedup"])
    print(f"speedup (fp32 p50 / INT8 p50), worst over thread counts: {worst:.2f}x")
    return 1 if worst < args.min_speedup else 0


if __name__ == "__main__":
    sys.exit(main())
