"""INT8 (Q/DQ) vs fp32 patched ONNX on this CPU, side by side in one run.

    python bench/int8_speedup.py --fp32 results/patched/yolov5s/640/model.onnx \\
        --int8 results/int8/yolov5s/640/model.qdq.onnx --threads 1,2 --batch 1,4

Both models run in ONNX Runtime (CPU) with the same session options and threads, timed in
alternation (trtflow.quant.kernels.compare_speed: one fp32 run, one INT8 run, repeated, each after
a 50 ms pause; ONNX Runtime's default thread spinning unless --no-spinning). The fp32 model is
the baseline measured in the same run. Prints one table row per (threads, batch, model) and the
speedup (fp32 p50 / INT8 p50) with the CPU form of the INT8 model that was timed (the
fastest whose integer kernels are exact on this CPU: trtflow.quant.kernels.cpu_form); exits 1
if any speedup is below --min-speedup.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trtflow.core.cpu import cpu_label  # noqa: E402
from trtflow.quant.kernels import compare_speed  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fp32", required=True, help="patched fp32 ONNX")
    p.add_argument("--int8", required=True, help="Q/DQ ONNX from quantize_onnx")
    p.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--min-speedup", type=float, default=0.0)
    p.add_argument("--no-spinning", action="store_true", help="ORT worker threads do not spin")
    args = p.parse_args(argv)

    import onnxruntime

    print(f"CPU: {cpu_label()}; "
          f"onnxruntime {onnxruntime.__version__}; {args.iterations} alternating iterations "
          f"after {args.warmup} warm-up; thread spinning "
          f"{'off' if args.no_spinning else 'on'}")  # fmt: skip
    print("| threads | batch | model | p50 ms | p90 ms | min ms | speedup (p50) | INT8 CPU form |")
    print("|---|---|---|---|---|---|---|---|")
    speedups, spinning = [], set()
    for threads in _ints(args.threads):
        for batch in _ints(args.batch):
            r = compare_speed(args.fp32, args.int8, batch, args.warmup, args.iterations, threads,
                              spinning=not args.no_spinning)  # fmt: skip
            for key in ("fp32", "int8"):
                s = r["stats"][key]
                speed = f"{r['speedup']:.2f}x" if key == "int8" else "baseline"
                form = "-"
                if key == "int8":
                    form = r["int8_form"] + ("" if r["comparable"] else " (NOT comparable)")
                print(f"| {threads} | {batch} | {key} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | "
                      f"{s['min_ms']:.1f} | {speed} | {form} |", flush=True)  # fmt: skip
            speedups.append(r["speedup"])
            spinning.add("on" if r["spinning"] else "off")
    worst = min(speedups)
    print(f"speedup (fp32 p50 / INT8 p50): worst {worst:.2f}x, best {max(speedups):.2f}x "
          f"(thread spinning {'/'.join(sorted(spinning))})")  # fmt: skip
    return 1 if worst < args.min_speedup else 0


if __name__ == "__main__":
    sys.exit(main())
