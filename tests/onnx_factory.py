"""Tiny ONNX models for the patch tests, built with onnx-graphsurgeon like its examples.

Every builder is deterministic (seeded weights) and returns an ``onnx.ModelProto`` at opset 17.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

OPSET = 17
INT64_MAX = np.iinfo(np.int64).max


def _model(graph: gs.Graph) -> onnx.ModelProto:
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model)
    return model


def detector_channels(num_classes: int) -> int:
    return 5 + num_classes


def detector_boxes(size: int) -> int:
    """Rows N of ``tiny_detector``'s output: 3 anchors on a stride-2 grid."""
    return 3 * (size // 2) ** 2


def tiny_detector(
    num_classes: int = 2,
    size: int = 32,
    batch: int | str = "unk__0",
    nhwc: bool = True,
    hard_coded_batch: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """A tf2onnx-like YOLO head: ``[B,H,W,3]`` -> Transpose -> Conv ... -> ``[B,N,5+C]``.

    Contains what tf2onnx leaves behind: the input Transpose(0,3,1,2), a Mul by 1, an Identity,
    a Reshape whose INT64 shape hard-codes batch ``hard_coded_batch`` (``[1,-1,5+C]``), and INT64
    Slice bounds (ends = INT64_MAX) and Gather indices on the output.
    """
    rng = np.random.default_rng(seed)
    ch = detector_channels(num_classes)
    x_shape = [batch, size, size, 3] if nhwc else [batch, 3, size, size]
    x = gs.Variable("input_1", np.float32, x_shape)
    nodes: list[gs.Node] = []

    def add(op: str, inputs: list, name: str, **attrs: object) -> gs.Variable:
        out = gs.Variable(f"{name}:0")
        nodes.append(gs.Node(op, name=name, attrs=attrs, inputs=inputs, outputs=[out]))
        return out

    def const(name: str, values: np.ndarray) -> gs.Constant:
        return gs.Constant(name, values)

    t = add("Transpose", [x], "conv1/transpose", perm=[0, 3, 1, 2]) if nhwc else x
    w1 = const("conv1/w", rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32))
    b1 = const("conv1/b", rng.normal(0, 0.1, 8).astype(np.float32))
    c1 = add("Conv", [t, w1, b1], "conv1", strides=[2, 2], pads=[1, 1, 1, 1])
    r1 = add("Relu", [c1], "relu1")
    m1 = add("Mul", [r1, const("one", np.array(1.0, np.float32))], "mul_one")
    w2 = const("head/w", rng.normal(0, 0.5, (3 * ch, 8, 1, 1)).astype(np.float32))
    b2 = const("head/b", rng.normal(0, 0.1, 3 * ch).astype(np.float32))
    c2 = add("Conv", [m1, w2, b2], "head")
    t2 = add("Transpose", [c2], "head/transpose", perm=[0, 2, 3, 1])
    i1 = add("Identity", [t2], "head/identity")
    shape = const("head/shape", np.array([hard_coded_batch, -1, ch], np.int64))
    rs = add("Reshape", [i1, shape], "head/reshape")
    sg = add("Sigmoid", [rs], "head/sigmoid")
    sl = add(
        "Slice",
        [
            sg,
            const("slice/starts", np.array([0], np.int64)),
            const("slice/ends", np.array([INT64_MAX], np.int64)),
            const("slice/axes", np.array([2], np.int64)),
        ],
        "slice",
    )
    out = gs.Variable("detections", np.float32, ["unk__1", detector_boxes(size), ch])
    indices = const("gather/indices", np.arange(ch, dtype=np.int64))
    nodes.append(gs.Node("Gather", name="gather", attrs={"axis": 2}, inputs=[sl, indices]))
    nodes[-1].outputs = [out]
    return _model(gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=OPSET))


def multi_transpose_model(seed: int = 0) -> onnx.ModelProto:
    """NHWC input pushed by tf2onnx into two Transpose(0,3,1,2) plus a Shape (NHWC) consumer.

    ``y = (conv_a(x) + conv_b(relu(x))) * channels(x)``, channels read from the NHWC shape.
    """
    rng = np.random.default_rng(seed)
    x = gs.Variable("x", np.float32, ["n", 8, 8, 3])
    ta, tb = gs.Variable("ta"), gs.Variable("tb")
    ca, rb, cb, s = gs.Variable("ca"), gs.Variable("rb"), gs.Variable("cb"), gs.Variable("s")
    c, cf, add = gs.Variable("c"), gs.Variable("cf"), gs.Variable("add")
    y = gs.Variable("y", np.float32, ["n", 4, 8, 8])
    wa = gs.Constant("wa", rng.normal(size=(4, 3, 1, 1)).astype(np.float32))
    wb = gs.Constant("wb", rng.normal(size=(4, 3, 1, 1)).astype(np.float32))
    nodes = [
        gs.Node("Transpose", "ta", {"perm": [0, 3, 1, 2]}, [x], [ta]),
        gs.Node("Transpose", "tb", {"perm": [0, 3, 1, 2]}, [x], [tb]),
        gs.Node("Conv", "conv_a", inputs=[ta, wa], outputs=[ca]),
        gs.Node("Relu", "relu_b", inputs=[tb], outputs=[rb]),
        gs.Node("Conv", "conv_b", inputs=[rb, wb], outputs=[cb]),
        gs.Node("Shape", "shape", inputs=[x], outputs=[s]),
        gs.Node(
            "Gather",
            "channels",
            {"axis": 0},
            [s, gs.Constant("idx", np.array([3], np.int64))],
            [c],
        ),
        gs.Node("Cast", "cast", {"to": onnx.TensorProto.FLOAT}, [c], [cf]),
        gs.Node("Add", "add", inputs=[ca, cb], outputs=[add]),
        gs.Node("Mul", "mul", inputs=[add, cf], outputs=[y]),
    ]
    return _model(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=OPSET))


def shape_chain_model() -> onnx.ModelProto:
    """``r = Relu(x); y = Reshape(r, Concat(Gather(Shape(r), [0]), [-1]))``, x static ``[2,3,4]``.

    The Shape reads an intermediate tensor whose shape is only known after shape inference.
    """
    x = gs.Variable("x", np.float32, [2, 3, 4])
    r, s, g, cat = gs.Variable("r"), gs.Variable("s"), gs.Variable("g"), gs.Variable("cat")
    y = gs.Variable("y", np.float32, [2, 12])
    nodes = [
        gs.Node("Relu", "relu", inputs=[x], outputs=[r]),
        gs.Node("Shape", "shape", inputs=[r], outputs=[s]),
        gs.Node(
            "Gather", "gather", {"axis": 0}, [s, gs.Constant("i", np.array([0], np.int64))], [g]
        ),
        gs.Node(
            "Concat", "concat", {"axis": 0}, [g, gs.Constant("m1", np.array([-1], np.int64))], [cat]
        ),
        gs.Node("Reshape", "reshape", inputs=[r, cat], outputs=[y]),
    ]
    return _model(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=OPSET))


def noop_chain_model() -> onnx.ModelProto:
    """``x [2,3,4]`` -> Relu -> nine no-ops -> Mul by 2 -> a rank-raising Add of 0 -> Identity.

    The last node is an Identity straight into the graph output ``y`` ``[1,2,3,4]``.
    """
    x = gs.Variable("x", np.float32, [2, 3, 4])
    nodes: list[gs.Node] = []
    tensors = [gs.Variable("relu")]
    nodes.append(gs.Node("Relu", "relu", inputs=[x], outputs=[tensors[-1]]))

    def add(op: str, extra: list, **attrs: object) -> None:
        out = gs.Variable(f"{op.lower()}{len(nodes)}")
        nodes.append(gs.Node(op, f"{op.lower()}{len(nodes)}", attrs, [tensors[-1], *extra], [out]))
        tensors.append(out)

    add("Identity", [])
    add("Cast", [], to=onnx.TensorProto.FLOAT)
    add("Transpose", [], perm=[0, 1, 2])
    add("Reshape", [gs.Constant("same_shape", np.array([2, 3, 4], np.int64))])
    add("Dropout", [])
    add("Add", [gs.Constant("zero", np.array(0.0, np.float32))])
    add("Mul", [gs.Constant("ones", np.ones(4, np.float32))])
    add("Sub", [gs.Constant("zero_s", np.zeros((3, 1), np.float32))])
    add("Div", [gs.Constant("one_d", np.array([1.0], np.float32))])
    add("Mul", [gs.Constant("two", np.array(2.0, np.float32))])  # not a no-op
    add("Add", [gs.Constant("zeros_4d", np.zeros((1, 1, 1, 1), np.float32))])  # rank 3 -> 4
    y = gs.Variable("y", np.float32, [1, 2, 3, 4])
    nodes.append(gs.Node("Identity", "last_identity", inputs=[tensors[-1]], outputs=[y]))
    return _model(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=OPSET))


def yolo_decode_model(
    order: str = "y_x_anchor",
    size: int = 32,
    num_classes: int = 2,
    normalized: bool = True,
    scramble: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """Two Conv heads (strides 2 and 4, 3 anchors) and a YOLOv5 decode the way TF exporters
    write it: per head Reshape/Transpose into ``order`` rows, Sigmoid, Slices of the last axis,
    ``(s*2 + grid) * stride``, ``Pow(s*2, 2) * anchors``, optionally ``/ size`` then ``* size``
    over the whole output (as ``denormalize_boxes`` leaves it); ``scramble`` permutes the rows
    with a Gather (a row order that is neither ``anchor_y_x`` nor ``y_x_anchor``).
    """
    rng = np.random.default_rng(seed)
    na, no = 3, detector_channels(num_classes)
    x = gs.Variable("images", np.float32, ["batch", 3, size, size])
    nodes: list[gs.Node] = []

    def add(op: str, inputs: list, name: str, **attrs: object) -> gs.Variable:
        out = gs.Variable(f"{name}:0")
        nodes.append(gs.Node(op, name=name, attrs=attrs, inputs=inputs, outputs=[out]))
        return out

    def const(name: str, values: np.ndarray) -> gs.Constant:
        return gs.Constant(name, np.ascontiguousarray(values))

    def i64(*values: int) -> np.ndarray:
        return np.array(values, np.int64)

    feats, outs = x, []
    two, inv = const("two", np.array(2.0, np.float32)), const("inv", np.array(1 / size, np.float32))
    anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]
    for h, stride in enumerate((2, 4)):
        cin = 3 if h == 0 else 8
        w = rng.normal(0, 0.5, (8, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, 8).astype(np.float32)
        feats = add("Conv", [feats, const(f"c{h}/w", w), const(f"c{h}/b", b)], f"c{h}",
                    strides=[2, 2], pads=[1, 1, 1, 1])  # fmt: skip
        feats = add("Relu", [feats], f"c{h}/relu")
        w = rng.normal(0, 0.5, (na * no, 8, 1, 1)).astype(np.float32)
        b = rng.normal(0, 0.5, na * no).astype(np.float32)
        head = add("Conv", [feats, const(f"head{h}/w", w), const(f"head{h}/b", b)], f"head{h}")
        g = size // stride
        hw = g * g
        yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        cells = np.stack([xv, yv], -1).reshape(hw, 2).astype(np.float32) - 0.5
        pairs = np.asarray(anchors[h], np.float32).reshape(na, 2) * 4
        if order == "y_x_anchor":
            t = add("Transpose", [head], f"d{h}/nhwc", perm=[0, 2, 3, 1])
            r = add("Reshape", [t, const(f"d{h}/shape", i64(-1, hw, na, no))], f"d{h}/rows")
            grid, anchor_grid, axis = cells.reshape(1, hw, 1, 2), pairs.reshape(1, 1, na, 2), 3
        else:
            r = add("Reshape", [head, const(f"d{h}/shape", i64(-1, na, no, hw))], f"d{h}/split")
            r = add("Transpose", [r], f"d{h}/rows", perm=[0, 1, 3, 2])
            grid, anchor_grid, axis = cells.reshape(1, 1, hw, 2), pairs.reshape(1, na, 1, 2), 3
        s = add("Sigmoid", [r], f"d{h}/sigmoid")

        def field(a: int, b: int, h: int = h, s: gs.Variable = s, axis: int = axis) -> gs.Variable:
            return add("Slice", [s, const(f"d{h}/s{a}", i64(a)), const(f"d{h}/e{a}", i64(b)),
                                 const(f"d{h}/a{a}", i64(axis))], f"d{h}/slice{a}")  # fmt: skip

        xy = add("Mul", [field(0, 2), two], f"d{h}/xy2")
        xy = add("Add", [xy, const(f"d{h}/grid", grid)], f"d{h}/xy_grid")
        xy = add("Mul", [xy, const(f"d{h}/stride", np.array(stride, np.float32))], f"d{h}/xy_px")
        wh = add("Pow", [add("Mul", [field(2, 4), two], f"d{h}/wh2"), two], f"d{h}/wh_sq")
        wh = add("Mul", [wh, const(f"d{h}/anchors", anchor_grid)], f"d{h}/wh_px")
        if normalized:
            xy = add("Mul", [xy, inv], f"d{h}/xy_norm")
            wh = add("Mul", [wh, inv], f"d{h}/wh_norm")
        y = add("Concat", [xy, wh, field(4, no)], f"d{h}/concat", axis=axis)
        outs.append(add("Reshape", [y, const(f"d{h}/out", i64(-1, na * hw, no))], f"d{h}/out"))
    y = add("Concat", outs, "concat", axis=1)
    n = sum(na * (size // s) ** 2 for s in (2, 4))
    if scramble:
        perm = rng.permutation(n).astype(np.int64)
        y = add("Gather", [y, const("scramble", perm)], "scramble", axis=1)
    if normalized:
        scale = np.ones(no, np.float32)
        scale[:4] = size
        y = add("Mul", [y, const("denormalize", scale)], "denormalize")
    out = gs.Variable("output0", np.float32, ["batch", n, no])
    nodes[-1].outputs = [out]
    return _model(gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=OPSET))
