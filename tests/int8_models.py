"""Tiny ONNX models and image folders for the INT8 tests (built in the test, no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = 3
SIZE = 64


def _conv(name, x, cin, cout, rng, k=3, s=1, bias=True):
    from onnx import helper, numpy_helper

    w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
    inits = [numpy_helper.from_array(w.astype(np.float32), f"{name}.weight")]
    ins = [x, f"{name}.weight"]
    if bias:
        b = rng.standard_normal(cout) * 0.1
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"{name}.bias"))
        ins.append(f"{name}.bias")
    node = helper.make_node("Conv", ins, [name], name=name, pads=[k // 2] * 4, strides=[s, s])
    return [node], inits


def _silu(name, x):
    from onnx import helper

    return [
        helper.make_node("Sigmoid", [x], [f"{name}.sig"], name=f"{name}.sig"),
        helper.make_node("Mul", [x, f"{name}.sig"], [f"{name}.act"], name=f"{name}.act"),
    ]


def tiny_detector(
    path: str | Path | None = None, size: int = SIZE, batch: int | str = "N", seed: int = 0
):
    """A YOLOv5-shaped toy: Conv/SiLU backbone, a head Conv, a float decode to [B, N, 5+C].

    Outputs decoded like YOLOv5: xy = (2 sig - 0.5 + grid) * stride, wh = (2 sig)^2 * anchor,
    then sigmoid objectness and class scores.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, cin = "images", 3
    for i, (cout, s) in enumerate([(8, 2), (16, 2), (16, 1)]):
        n, w = _conv(f"backbone.{i}.conv", x, cin, cout, rng, s=s)
        nodes += n + _silu(f"backbone.{i}", f"backbone.{i}.conv")
        inits += w
        x, cin = f"backbone.{i}.act", cout
    no = 5 + CLASSES
    n, w = _conv("head.conv", x, cin, no, rng, k=1)
    nodes += n
    inits += w
    g = size // 4
    stride = 4.0
    yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    grid = np.stack([xv, yv], -1).reshape(1, g * g, 2).astype(np.float32)
    consts = {
        "decode.shape": np.array([-1, no, g * g], np.int64),
        "decode.xy_scale": np.float32(2 * stride),
        "decode.xy_offset": ((grid - 0.5) * stride).astype(np.float32),
        "decode.wh_scale": np.full((1, 1, 2), 4 * 12.0, np.float32),
        "decode.s0": np.array([0], np.int64),
        "decode.s2": np.array([2], np.int64),
        "decode.s4": np.array([4], np.int64),
        "decode.s_end": np.array([no], np.int64),
        "decode.axis": np.array([2], np.int64),
    }
    inits += [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    H = helper.make_node  # noqa: N806
    nodes += [
        H("Reshape", ["head.conv", "decode.shape"], ["d.r"], name="decode.reshape"),
        H("Transpose", ["d.r"], ["d.t"], name="decode.transpose", perm=[0, 2, 1]),
        H("Sigmoid", ["d.t"], ["d.s"], name="decode.sigmoid"),
        H("Slice", ["d.s", "decode.s0", "decode.s2", "decode.axis"], ["d.xy0"], name="decode.sxy"),
        H("Slice", ["d.s", "decode.s2", "decode.s4", "decode.axis"], ["d.wh0"], name="decode.swh"),
        H(
            "Slice",
            ["d.s", "decode.s4", "decode.s_end", "decode.axis"],
            ["d.rest"],
            name="decode.sr",
        ),
        H("Mul", ["d.xy0", "decode.xy_scale"], ["d.xy1"], name="decode.xy_mul"),
        H("Add", ["d.xy1", "decode.xy_offset"], ["d.xy"], name="decode.xy_add"),
        H("Mul", ["d.wh0", "d.wh0"], ["d.wh1"], name="decode.wh_sq"),
        H("Mul", ["d.wh1", "decode.wh_scale"], ["d.wh"], name="decode.wh_mul"),
        H("Concat", ["d.xy", "d.wh", "d.rest"], ["output0"], name="decode.concat", axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, g * g, no])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def write_images(folder: str | Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small generated scenes (alternating JPEG/PNG, mixed sizes) in ``folder``."""
    from PIL import Image

    from trtflow.images.scenes import scene

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = [(48, 80), (80, 48), (64, 64)][i % 3]
        p = folder / (f"img_{i:03d}.png" if i % 2 else f"img_{i:03d}.jpg")
        Image.fromarray(scene(rng, h, w)).save(p)
        out.append(p)
    return out
