"""Frozen pbs in other exporters' layouts, built in the test from trtflow's built-in model.

``other_exporter_pb`` writes the layout a widely used TensorFlow YOLOv5 exporter produces:
NHWC input ``x:0`` ``[1,H,W,3]`` (batch fixed at 1), output ``Identity:0`` ``[1,N,5+C]`` with
xywh normalised to 0-1 and the rows of each level ordered (y, x, anchor) — not the built-in
(anchor, y, x), and a Reshape that hard-codes the batch 1. The head convolutions and their
weights are the built-in model's, so the detections are the built-in model's own, reordered
and divided by the image size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def builtin_rows_as_y_x_anchor(y: np.ndarray, image_size: int, anchors: int = 3) -> np.ndarray:
    """Reorder the built-in model's rows (anchor, y, x per level) to (y, x, anchor)."""
    out, row = [], 0
    for stride in (8, 16, 32):
        cells = (image_size // stride) ** 2
        level = y[:, row : row + anchors * cells]
        row += anchors * cells
        b, _, c = level.shape
        out.append(level.reshape(b, anchors, cells, c).transpose(0, 2, 1, 3).reshape(b, -1, c))
    return np.concatenate(out, axis=1)


def other_exporter_pb(
    path: str | Path,
    image_size: int = 64,
    classes: int = 2,
    variant: str = "n",
    seed: int = 0,
    nchw: bool = False,
) -> Path:
    """Write the other exporter's frozen pb of the built-in YOLOv5 (see the module docstring);
    ``nchw`` makes its input ``[1,3,H,W]``."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from trtflow.tf.yolov5 import ANCHORS, STRIDES, build_yolov5

    model = build_yolov5(variant, classes, image_size, seed)
    heads = keras.Model(model.inputs, model.get_layer("output0").input)
    na, no = len(ANCHORS[0]) // 2, 5 + classes

    def decode(x: tf.Tensor) -> tf.Tensor:
        z = []
        maps = heads(tf.transpose(x, [0, 2, 3, 1]) if nchw else x)
        for raw, anchors, stride in zip(maps, ANCHORS, STRIDES, strict=True):
            ny = nx = image_size // stride
            yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            grid = np.stack([xv, yv], -1).reshape(1, ny * nx, 1, 2).astype(np.float32) - 0.5
            anchor_grid = np.asarray(anchors, np.float32).reshape(1, 1, na, 2) * 4
            # rows: (y, x), then anchor; the static batch (1) written into the shape, as
            # exporters that read x.shape[0] do (fix_batch must free it for a dynamic batch)
            y = tf.reshape(raw, [x.shape[0], ny * nx, na, no])
            s = tf.sigmoid(y)
            xy = (s[..., 0:2] * 2 + grid) * stride / image_size
            wh = s[..., 2:4] ** 2 * anchor_grid / image_size
            y = tf.concat([xy, wh, s[..., 4:]], -1)
            z.append(tf.reshape(y, [-1, na * ny * nx, no]))
        return tf.concat(z, 1)

    shape = [1, 3, image_size, image_size] if nchw else [1, image_size, image_size, 3]
    spec = tf.TensorSpec(shape, tf.float32, name="x")
    concrete = tf.function(decode, input_signature=[spec]).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path


def classifier_pb(path: str | Path, image_size: int = 64, classes: int = 10) -> Path:
    """A frozen image classifier (NHWC [1,H,W,3] -> [1,classes]): not a detector."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    w = tf.constant(np.random.default_rng(0).standard_normal((3, classes)).astype(np.float32))

    def classify(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), w))

    spec = tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="x")
    concrete = tf.function(classify, input_signature=[spec]).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path
