"""Peak memory of the pb -> ONNX conversion per YOLOv5 variant: tf2onnx as is vs trtflow's.

    python bench/convert_memory.py n=results/pb/yolov5n/640/model.pb \\
        s=results/pb/yolov5s/640/model.pb [x=...] [--paths tf2onnx,trtflow] [--phases]

Each conversion runs alone in a fresh Python process (the same interpreter), one after the
other, so every peak is that of one conversion of one model:

- ``tf2onnx`` (the baseline, measured in the same run): ``tf2onnx.convert.from_graph_def`` +
  ``onnx.checker.check_model`` + ``onnx.save``, what ``trtflow convert`` did before;
- ``tf2onnx-gc``: the same with Python's collector tuned (``gc.freeze`` after the imports,
  low thresholds) so that it runs full collections often: tf2onnx untouched, a reference for
  the variants whose plain conversion does not fit the machine;
- ``trtflow``: ``trtflow.stages.convert.convert_pb_to_onnx``, the stage itself (manifest included).

Prints the CPU, then one row per variant and path: the weights (bytes of the ONNX
initializers), the child's peak RSS (``ru_maxrss`` from ``wait4``), its wall time, peak / the
baseline's peak, peak / weights, and whether the two ONNX files compute the same
(``trtflow.onnx.io.graph_digest``: bit-identical nodes, attributes, I/O and weights; tf2onnx
names the constants it merges differently from run to run, so the file's sha256 is printed
but not compared). ``--phases`` adds each phase's peak RSS, sampled every 10 ms from this
process through ``/proc/<pid>/status`` (a phase is named by the mark that ends it). A child
whose RSS passes ``--limit-mb``, or that leaves the machine less than 1.5 GB available, is
stopped: its row shows ``>`` the RSS it had reached. Exits 1 if two paths' ONNX differ.

The pbs are ``export_pb``'s (``snakemake results/pb/<model>/<size>/model.pb`` with the
variants in the zoo); the input/output names come from the manifest beside each pb.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MARK = "@@phase "

# The child of the baseline: from_graph_def as trtflow called it, marking the end of its phases.
BASELINE = r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pb, out, inp, outp, opset = sys.argv[1:6]
def mark(name):
    sys.stderr.write("@@phase " + name + "\n"); sys.stderr.flush()
import onnx, tensorflow as tf, tf2onnx
from tf2onnx import convert, optimizer, tf_loader
def ends(mod, attr, name):
    f = getattr(mod, attr)
    def wrapped(*a, **k):
        r = f(*a, **k)
        mark(name)
        return r
    setattr(mod, attr, wrapped)
ends(tf_loader, "freeze_session", "freeze_session")
ends(tf_loader, "tf_optimize", "grappler")
ends(convert, "process_tf_graph", "process_tf_graph")
ends(optimizer, "optimize_graph", "optimize_graph")
if os.environ.get("TRTFLOW_BENCH_FREQUENT_GC"):
    import gc
    gc.freeze()  # TF's objects out of the collector's counts: full collections come often
    gc.set_threshold(100, 2, 2)
mark("import")
gd = tf.compat.v1.GraphDef()
gd.ParseFromString(open(pb, "rb").read())
mark("read_pb")
model, _ = convert.from_graph_def(gd, input_names=[inp], output_names=[outp], opset=int(opset))
mark("make_model")
onnx.checker.check_model(model)
mark("check_model")
onnx.save(model, out)
mark("save")
"""

# The child of trtflow's path: the stage function; its log lines "convert: <phase> ..." mark
# the ends of its phases.
TRTFLOW = r"""
import logging, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pb, out, inp, outp, opset = sys.argv[1:6]
class Marks(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("convert: "):
            sys.stderr.write("@@phase " + msg.split(" ")[1] + "\n"); sys.stderr.flush()
logging.getLogger("trtflow").addHandler(Marks())
logging.getLogger("trtflow").setLevel(logging.INFO)
import tensorflow, tf2onnx
sys.stderr.write("@@phase import\n"); sys.stderr.flush()
from trtflow.stages.convert import convert_pb_to_onnx
convert_pb_to_onnx(pb, out, inp, outp, int(opset))
sys.stderr.write("@@phase check_model+save\n"); sys.stderr.flush()
"""

CHILDREN = {"tf2onnx": BASELINE, "tf2onnx-gc": BASELINE, "trtflow": TRTFLOW}
#: tf2onnx-gc: tf2onnx untouched, only Python's collector tuned to run full collections often,
#: so the graph copies are freed: a reference for variants whose plain tf2onnx conversion does
#: not fit the machine (the collector's schedule changes no result).
CHILD_ENV = {"tf2onnx-gc": {"TRTFLOW_BENCH_FREQUENT_GC": "1"}}


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


#: A conversion is also stopped when the machine has less memory than this left for others.
MIN_AVAILABLE_MB = 1500


def _available_mb() -> float:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    return float("inf")


def convert_in_child(
    path: str, pb: Path, out: Path, io: dict, opset: int, limit_mb: float | None = None
) -> dict:
    """Run one conversion in a fresh process; its peak RSS, wall time and phase peaks (the
    child is killed when its RSS passes ``limit_mb`` or the machine's available memory drops
    below ``MIN_AVAILABLE_MB``: ``stopped`` is then True)."""
    argv = [sys.executable, "-c", CHILDREN[path], str(pb), str(out), io["input_name"],
            io["output_name"], str(opset)]  # fmt: skip
    env = dict(
        os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", **CHILD_ENV.get(path, {})
    )
    started = time.time()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env)  # fmt: skip
    phases: list[list] = [["start", 0]]  # [name of the phase that ended, its peak kB]
    tail: list[str] = []
    stopped = False

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(MARK):
                phases[-1][0] = line[len(MARK) :].strip()
                phases.append(["(after the last mark)", 0])
            else:
                tail.append(line)
                del tail[:-30]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while True:
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        rss = _rss_kb(proc.pid)
        phases[-1][1] = max(phases[-1][1], rss)
        if (limit_mb and rss > limit_mb * 1024 or _available_mb() < MIN_AVAILABLE_MB) and (
            not stopped
        ):
            proc.kill()
            stopped = True
        time.sleep(0.01)
    wall = time.time() - started
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stopped:
        return {"peak_mb": usage.ru_maxrss / 1024, "seconds": wall, "stopped": True,
                "phases": [(n, kb / 1024) for n, kb in phases if kb]}  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{path} conversion of {pb} failed ({proc.returncode}):\n{''.join(tail)}")
    return {"peak_mb": usage.ru_maxrss / 1024, "seconds": wall,
            "phases": [(n, kb / 1024) for n, kb in phases if kb], "stopped": False}  # fmt: skip


def weights_mb(model) -> float:
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer) / 1e6


def pb_io(pb: Path) -> dict:
    """Input/output names from export_pb's manifest beside the pb (the built-in's by default)."""
    manifest = pb.with_name(pb.name + ".manifest.json")
    if manifest.is_file():
        io = json.loads(manifest.read_text())["io"]
        return {"input_name": io["input_name"], "output_name": io["output_name"]}
    return {"input_name": "images:0", "output_name": "Identity:0"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "pbs", nargs="+", metavar="VARIANT=PB", help="e.g. s=results/pb/yolov5s/640/model.pb"
    )
    p.add_argument("--paths", default="tf2onnx,trtflow", help="conversions to run, baseline first")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--phases", action="store_true", help="also print each phase's peak RSS")
    p.add_argument("--limit-mb", type=float, help="stop a conversion whose RSS passes this")
    p.add_argument("--keep", help="folder to keep the ONNX files in (default: a temp folder)")
    args = p.parse_args(argv)

    import onnx

    from trtflow.core.cpu import cpu_label
    from trtflow.onnx.io import graph_digest

    paths = args.paths.split(",")
    print(f"CPU: {cpu_label()}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(
        "| variant | weights MB | path | peak RSS MB | time s | vs "
        f"{paths[0]} | peak / weights | same ONNX as {paths[0]} | sha256 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in args.pbs:
            variant, _, pb = item.partition("=")
            pb = Path(pb)
            io = pb_io(pb)
            runs = {}
            for path in paths:
                out = out_dir / f"{variant}.{path}.onnx"
                runs[path] = r = convert_in_child(path, pb, out, io, args.opset, args.limit_mb)
                if not r["stopped"]:
                    model = onnx.load(str(out))
                    r["digest"], r["weights_mb"] = graph_digest(model), weights_mb(model)
                    del model
                    r["sha"] = hashlib.sha256(out.read_bytes()).hexdigest()[:12] + "…"
            done = [r for r in runs.values() if not r["stopped"]]
            mb = done[0]["weights_mb"] if done else float("nan")
            base = runs[paths[0]]
            for path, r in runs.items():
                more = ">" if r["stopped"] else ""
                vs = r["peak_mb"] / base["peak_mb"]
                vs_text = f"{'<' if base['stopped'] and not r['stopped'] else more}{vs:.2f}x"
                if r["stopped"] or base["stopped"]:
                    same = "(stopped at the limit)"
                else:
                    same = "yes" if r["digest"] == base["digest"] else "NO"
                    ok &= r["digest"] == base["digest"]
                print(f"| {variant} | {mb:.1f} | {path} | {more}{r['peak_mb']:.0f} "
                      f"| {more}{r['seconds']:.1f} | {vs_text} | {more}{r['peak_mb'] / mb:.1f}x "
                      f"| {same} | {r.get('sha', '')} |", flush=True)  # fmt: skip
                if args.phases:
                    print("|  |  | phases: " + ", ".join(
                        f"{n} {mb_:.0f}" for n, mb_ in r["phases"]) + " MB |  |  |  |  |  |  |",
                        flush=True)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
