"""ONNX Runtime: the one session factory, runner and timing loop every stage uses."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.batches import in_chunks
from trtflow.images.io import to_layout

log = logging.getLogger(__name__)


def make_session(
    model: str | Path | Any,
    threads: int = 0,
    spinning: bool = True,
    exact: bool = False,
    optimized_path: str | Path | None = None,
) -> Any:
    """An ONNX Runtime CPU session with full graph optimisation and ``threads`` intra-op threads.

    ``spinning=False`` stops idle worker threads from busy-waiting after a run; use it when
    several sessions (or TF) are timed interleaved, or one session's spinning threads steal the
    cores of the next.

    ``exact=True`` is for accuracy, never for speed: no graph optimisation and no QDQ fusion,
    so every node runs as written — feed it ``trtflow.quant.exact.load_exact``'s integer form of a
    Q/DQ model, whose Convs sum int8 products exactly (TensorRT's arithmetic) on every CPU. The
    fused integer kernels ONNX Runtime picks otherwise depend on the instruction set: without
    VNNI its U8S8 path sums products in saturating 16-bit pairs, so a Q/DQ model computes other
    numbers on an AVX2 CPU than on an AVX-512 VNNI one (``trtflow.quant.kernels``).

    ``optimized_path`` saves the graph ONNX Runtime actually runs (to see which kernels fused).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if exact:  # no transformer runs, the QDQ fusions included
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def time_callable(fn: Any, warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def input_for(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    inp = session.get_inputs()[0]
    shape = [batch if i == 0 else d for i, d in enumerate(inp.shape)]
    if not all(isinstance(d, int) for d in shape):
        raise ValueError(f"input {inp.name} has a dynamic non-batch dimension: {inp.shape}")
    rng = np.random.default_rng(seed)
    return {inp.name: rng.random(shape, dtype=np.float32)}


class OnnxRunner:
    """An ONNX Runtime CPU session with one image input: the one runner every stage uses.

    Fed images in either layout (``"NHWC"`` or ``"NCHW"``), in any number: they are transposed to
    the input's layout and fed in chunks of a fixed batch (``pad``: a last partial chunk padded),
    or of ``chunk`` images for a dynamic batch (None: all at once). ``exact`` sessions run every
    node as written (see ``make_session``).
    """

    def __init__(
        self,
        model: str | Path | Any,
        threads: int = 0,
        exact: bool = False,
        pad: bool = False,
        chunk: int | None = None,
    ) -> None:
        self.session = make_session(model, threads, exact=exact)
        self.input = self.session.get_inputs()[0]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.pad = pad
        self.chunk = chunk

    def __call__(self, x: np.ndarray, layout: str = "NHWC") -> dict[str, np.ndarray]:
        x = to_layout(x, layout, list(self.input.shape))
        lead = self.input.shape[0]
        static = isinstance(lead, int) and lead > 0
        outs = in_chunks(
            lambda p: self.session.run(None, {self.input.name: p}),
            x,
            lead if static else self.chunk,
            pad=self.pad or not static,
        )
        return dict(zip(self.outputs, outs, strict=True))
