"""trtflow's built-in YOLOv5 (v6/v7 architecture) as a Keras 3 functional model.

The network follows the published yolov5{n,s,m,l,x}.yaml of v6.0+: a CSP backbone of Conv/C3
blocks ending in SPPF, a PAN neck, and a Detect head over strides 8/16/32 with the COCO anchors.
Layer names mirror the Ultralytics module paths (``model.2.m.0.cv1.conv``), so a ported state
dict maps onto them one to one.

Input: ``images``, NHWC float32 ``[batch, H, W, 3]`` in 0-1, batch dynamic.
Output: ``(batch, N, 5 + classes)`` decoded like YOLOv5: xywh in pixels, then objectness and
per-class scores (all sigmoid). Predictions are ordered level (P3, P4, P5), then anchor, then
row, then column, as in Ultralytics' exports.

Weights are initialized from a seed alone (see ``_Builder``): every variant keeps its activations
at a small, steady scale on image-like inputs, so outputs vary with the input, fit in float16 and
are not so sensitive that float32 runtimes (or INT8 quantization) disagree.

Imports TensorFlow/Keras at module level: only stages that need TF import this module.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from trtflow.core.errors import TrtflowError

#: Variant name -> (depth multiple, width multiple), as in yolov5{n,s,m,l,x}.yaml.
VARIANTS: dict[str, tuple[float, float]] = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}

#: COCO anchors (w, h pairs in pixels) per detection level P3, P4, P5.
ANCHORS: list[list[int]] = [
    [10, 13, 16, 30, 33, 23],
    [30, 61, 62, 45, 59, 119],
    [116, 90, 156, 198, 373, 326],
]

#: Downsampling factor of each detection level.
STRIDES: list[int] = [8, 16, 32]

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.97  # PyTorch momentum 0.03 in Keras' convention
_DETECT_INDEX = 24  # index of Detect in the yolov5 yaml (names its layers "model.24.m.<i>")
# Init calibration (see _Builder): _CALIBRATION_BATCH seeded scenes of _CALIBRATION_SIZE pixels
# from trtflow.images.io's built-in scene generator (gradients, texture, shapes — image-like, not
# white noise), at YOLOv5's native 640 whatever the model's size, so the weights do not depend
# on image_size. Each conv's output is scaled to _CONV_STD on them: small enough that SiLU stays
# nearly linear, where a variance-preserving random network is neither chaotic nor amplitude-
# unstable (SiLU's slope doubles from small to large inputs, so at std 0.25 high-contrast images
# grew 5x by P5 and saturated a few scores that INT8 then clipped). Calibrating on white noise
# (or on a 256-pixel image) left the activations of image-like inputs growing ~10x through the
# neck and the head's logits saturated. Measured on yolov5s-640 INT8 vs fp32 (README "INT8"):
# agreement mAP@.5 0.07 (noise, 0.25) -> 0.33-0.56 (scenes, 0.25) -> 0.55-0.58 (scenes, 0.1).
# Detect's logits get _HEAD_STD around their bias priors.
_CALIBRATION_BATCH = 2
_CALIBRATION_SIZE = 640
_CONV_STD = 0.1
_HEAD_STD = 0.5


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TrtflowError(
            f"image size {image_size!r} is not an integer", "use a multiple of 32, e.g. 320 or 640"
        )
    top = max(STRIDES)
    if image_size < top or image_size % top:
        lo = image_size // top * top
        fix = f"use {lo} or {lo + top}" if lo >= top else f"use {top}"
        raise TrtflowError(f"image size {image_size} is not a multiple of {top}", fix)


def num_predictions(image_size: int) -> int:
    """Number of predicted boxes N for a square image: 3 anchors per cell on each level.

    >>> num_predictions(640)
    25200
    """
    _check_image_size(image_size)
    per_level = len(ANCHORS[0]) // 2
    return sum(per_level * (image_size // s) ** 2 for s in STRIDES)


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class _Seeds:
    """Derives one initializer seed per layer name from the base seed (order independent)."""

    def __init__(self, base: int) -> None:
        self.base = int(base)

    def __call__(self, name: str) -> int:
        digest = hashlib.blake2b(f"{self.base}:{name}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "little") & 0x7FFFFFFF


@keras.saving.register_keras_serializable(package="trtflow")
class YoloDecode(keras.layers.Layer):
    """YOLOv5 Detect decode: raw NHWC head maps -> ``(batch, N, 5 + classes)`` in pixels.

    Per level, ``(b, ny, nx, na * no)`` is reordered to ``(b, na * ny * nx, no)``; the levels are
    concatenated once, passed through a sigmoid and decoded with constant grids:
    ``xy = (2 s - 0.5 + grid) * stride``, ``wh = (2 s)^2 * anchor``. The grids are computed from
    the static image size, so the batch stays dynamic.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: tuple[int, int] | list[int],
        anchors: list[list[float]] | None = None,
        strides: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.anchors = [list(map(float, a)) for a in (anchors or ANCHORS)]
        self.strides = [int(s) for s in (strides or STRIDES)]
        self.num_anchors = len(self.anchors[0]) // 2
        self.num_outputs = 5 + self.num_classes
        self._xy_scale, self._xy_offset, self._wh_scale = self._grids()

    def _grids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-prediction constants: xy = s * xy_scale + xy_offset, wh = s^2 * wh_scale."""
        h, w = self.image_size
        scales, offsets, whs = [], [], []
        for anchors, stride in zip(self.anchors, self.strides, strict=True):
            ny, nx = h // stride, w // stride
            yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            cells = np.stack([xv, yv], -1).reshape(1, ny * nx, 2).astype(np.float64)
            cells = np.broadcast_to(cells, (self.num_anchors, ny * nx, 2))
            pairs = np.asarray(anchors, np.float64).reshape(self.num_anchors, 1, 2)
            offsets.append(((cells - 0.5) * stride).reshape(-1, 2))
            scales.append(np.full((self.num_anchors * ny * nx, 2), 2.0 * stride))
            whs.append(np.broadcast_to(4.0 * pairs, (self.num_anchors, ny * nx, 2)).reshape(-1, 2))
        return tuple(np.concatenate(a).astype(np.float32) for a in (scales, offsets, whs))

    def call(self, inputs: list[Any]) -> Any:
        h, w = self.image_size
        flat = []
        for x, stride in zip(inputs, self.strides, strict=True):
            cells = (h // stride) * (w // stride)
            x = keras.ops.reshape(x, (-1, cells, self.num_anchors, self.num_outputs))
            x = keras.ops.transpose(x, (0, 2, 1, 3))
            flat.append(keras.ops.reshape(x, (-1, self.num_anchors * cells, self.num_outputs)))
        s = keras.ops.sigmoid(keras.ops.concatenate(flat, axis=1))
        xy = s[..., 0:2] * self._xy_scale + self._xy_offset
        wh = keras.ops.square(s[..., 2:4]) * self._wh_scale
        return keras.ops.concatenate([xy, wh, s[..., 4:]], axis=-1)

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple:
        return (input_shape[0][0], self._xy_scale.shape[0], self.num_outputs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            image_size=list(self.image_size),
            anchors=self.anchors,
            strides=self.strides,
        )
        return config


@keras.saving.register_keras_serializable(package="trtflow")
class NearestUpsample2x(keras.layers.Layer):
    """Nearest-neighbour 2x upsampling of NHWC maps as a single image resize.

    Exports to one ONNX ``Resize`` node, where ``UpSampling2D`` (``tf.repeat``) becomes a chain
    of Shape/Tile/Reshape ops on the dynamic batch. ``keras.layers.Resizing`` is no alternative:
    its ``call(training=True)`` default leaks into the call context and puts every later
    BatchNorm into training mode when the model is called without ``training=``.
    """

    def call(self, inputs: Any) -> Any:
        h, w = inputs.shape[1], inputs.shape[2]
        return keras.ops.image.resize(inputs, (2 * h, 2 * w), interpolation="nearest")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple:
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)


def _center_kernel(kernel: np.ndarray) -> np.ndarray:
    """Make each output channel's taps sum to zero over the input channels (HWIO layout).

    SiLU outputs share a positive mean; a zero-mean kernel does not turn it into a per-channel
    offset, which inference-mode BatchNorm (an identity at init) would carry and compound.
    """
    mean = kernel.mean(axis=2, dtype=np.float64, keepdims=True)  # float64: machine independent
    return kernel - mean.astype(kernel.dtype)


class _Node(NamedTuple):
    """A tensor of the model being laid out and its value on the calibration batch."""

    sym: Any  # symbolic KerasTensor of the functional model
    val: Any  # eager tensor: the layers applied to the calibration batch


class _Builder:
    """Lays out the graph and initializes it from the seed: centered, calibrated He-style convs.

    At inference a fresh BatchNorm (gamma 1, beta 0, mean 0, variance 1) is an identity, so
    nothing re-normalizes the activations: with plain He init ``n`` shrinks towards zero while
    ``x`` grows by orders of magnitude for some seeds, and even seeds that merely drift give
    outputs so sensitive that TF and ONNX Runtime disagree by pixels. So each conv kernel is

    1. He-style uniform (fan-in), seeded from the layer name;
    2. centered over its input channels (``_center_kernel``; not the first conv, whose input is
       the image), so SiLU's positive mean does not pile up as per-channel offsets;
    3. rescaled so that its output has standard deviation ``_CONV_STD`` on seeded generated
       scenes at 640 pixels (LSUV, Mishkin & Matas 2016) — ``_CONV_STD / sqrt(n)`` for the last
       conv of each of the ``n`` residual branches of a C3 (as in Fixup), so residual streams do
       not compound.
       The scale is rounded to 1/16 octave, so last-bit differences between machines or TF
       versions do not change the weights.

    Each conv is calibrated as soon as it is created, with the already initialized layers before
    it, in one pass over the calibration batch.
    """

    def __init__(self, depth: float, width: float, seed: int) -> None:
        from trtflow.images.scenes import scene

        self.depth = depth
        self.width = width
        self.seeds = _Seeds(seed)
        rng = np.random.default_rng(self.seeds("calibration"))
        side = _CALIBRATION_SIZE
        images = [scene(rng, side, side) for _ in range(_CALIBRATION_BATCH)]
        self.calibration = np.stack(images).astype(np.float32) / np.float32(255)

    def ch(self, c: int) -> int:
        return _make_divisible(c * self.width, 8)

    def n(self, n: int) -> int:
        return max(round(n * self.depth), 1) if n > 1 else n

    @staticmethod
    def apply(layer: keras.layers.Layer, x: _Node | list[_Node]) -> _Node:
        """Call ``layer`` on the graph, then (built by then) its ``call`` on the calibration
        values, skipping ``__call__``'s bookkeeping."""
        if isinstance(x, list):
            return _Node(layer([t.sym for t in x]), layer.call([t.val for t in x]))
        return _Node(layer(x.sym), layer.call(x.val))

    @staticmethod
    def calibrate(layer: keras.layers.Layer, kernel: np.ndarray, val: Any, std: float) -> Any:
        """Set ``layer``'s kernel to ``kernel`` rescaled so that its output on ``val`` has ``std``
        (its bias still zero); the scale is rounded to 1/16 octave. Returns that output."""
        layer.kernel.assign(kernel)
        y = layer.call(val)
        octaves = round(math.log2(std / float(keras.ops.std(y))) * 16) / 16
        scale = np.float32(2.0**octaves)
        layer.kernel.assign(kernel * scale)
        return y * scale

    def conv(
        self,
        x: _Node,
        c2: int,
        k: int,
        s: int,
        name: str,
        p: int | None = None,
        std: float = 1.0,  # relative to _CONV_STD
    ) -> _Node:
        """Conv2D (no bias) + BatchNorm + SiLU, padded like PyTorch (k // 2 unless given)."""
        p = k // 2 if p is None else p
        if s > 1 and p:
            x = self.apply(keras.layers.ZeroPadding2D(p, name=f"{name}.pad"), x)
            padding = "valid"
        else:
            padding = "same" if p else "valid"
        conv = keras.layers.Conv2D(
            c2,
            k,
            strides=s,
            padding=padding,
            use_bias=False,
            kernel_initializer=keras.initializers.HeUniform(seed=self.seeds(f"{name}.conv")),
            name=f"{name}.conv",
        )
        sym = conv(x.sym)
        kernel = conv.kernel.numpy()
        if kernel.shape[2] > 3:
            kernel = _center_kernel(kernel)
        y = _Node(sym, self.calibrate(conv, kernel, x.val, _CONV_STD * std))
        bn = keras.layers.BatchNormalization(
            momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}.bn"
        )
        return self.apply(keras.layers.Activation("silu", name=f"{name}.act"), self.apply(bn, y))

    def bottleneck(self, x: _Node, c2: int, shortcut: bool, name: str, n: int) -> _Node:
        add = shortcut and x.sym.shape[-1] == c2
        y = self.conv(x, c2, 1, 1, f"{name}.cv1")  # e=1.0 inside C3
        y = self.conv(y, c2, 3, 1, f"{name}.cv2", std=n**-0.5 if add else 1.0)
        if add:
            y = self.apply(keras.layers.Add(name=f"{name}.add"), [x, y])
        return y

    def c3(self, x: _Node, c2: int, n: int, shortcut: bool, name: str) -> _Node:
        c_ = int(c2 * 0.5)
        a = self.conv(x, c_, 1, 1, f"{name}.cv1")
        b = self.conv(x, c_, 1, 1, f"{name}.cv2")
        for i in range(n):
            a = self.bottleneck(a, c_, shortcut, f"{name}.m.{i}", n)
        return self.conv(self.concat([a, b], f"{name}.cat"), c2, 1, 1, f"{name}.cv3")

    def sppf(self, x: _Node, c2: int, k: int, name: str) -> _Node:
        x = self.conv(x, x.sym.shape[-1] // 2, 1, 1, f"{name}.cv1")
        pool = keras.layers.MaxPooling2D(k, strides=1, padding="same", name=f"{name}.m")
        y1 = self.apply(pool, x)
        y2 = self.apply(pool, y1)
        y3 = self.apply(pool, y2)
        return self.conv(self.concat([x, y1, y2, y3], f"{name}.cat"), c2, 1, 1, f"{name}.cv2")

    def upsample(self, x: _Node, name: str) -> _Node:
        return self.apply(NearestUpsample2x(name=name), x)

    def concat(self, xs: list[_Node], name: str) -> _Node:
        return self.apply(keras.layers.Concatenate(axis=-1, name=name), xs)

    def detect(self, feats: list[_Node], num_classes: int) -> list[Any]:
        """Detect's 1x1 convs (raw maps, decoded by ``YoloDecode``): Glorot-uniform kernels
        calibrated to ``_HEAD_STD``, biases set to YOLOv5's priors (``_detect_biases``)."""
        raws = []
        for i, (feat, stride) in enumerate(zip(feats, STRIDES, strict=True)):
            name = f"model.{_DETECT_INDEX}.m.{i}"
            head = keras.layers.Conv2D(
                len(ANCHORS[i]) // 2 * (5 + num_classes),
                1,
                kernel_initializer=keras.initializers.GlorotUniform(seed=self.seeds(name)),
                bias_initializer="zeros",
                name=name,
            )
            raws.append(head(feat.sym))
            self.calibrate(head, head.kernel.numpy(), feat.val, _HEAD_STD)
            head.bias.assign(_detect_biases(num_classes, stride))
        return raws


def _detect_biases(num_classes: int, stride: int) -> np.ndarray:
    """YOLOv5's prior: ~8 objects per 640 image, class probability ~0.6 / classes."""
    na, no = len(ANCHORS[0]) // 2, 5 + num_classes
    b = np.zeros((na, no), np.float32)
    b[:, 4] = math.log(8 / (640 / stride) ** 2)
    b[:, 5:] = math.log(0.6 / (num_classes - 0.99))
    return b.reshape(-1)


def build_yolov5(
    variant: str = "s",
    num_classes: int = 80,
    image_size: int = 640,
    seed: int = 0,
    weights: str | None = None,
) -> keras.Model:
    """Build YOLOv5{variant} (v6/v7 architecture) for square ``image_size`` inputs.

    Args:
        variant: one of ``VARIANTS`` (n, s, m, l, x).
        num_classes: number of classes (>= 1); the output has ``5 + num_classes`` columns.
        image_size: input height and width, a multiple of 32.
        seed: base seed; every initializer gets a seed derived from it and its layer name, and
            the init is calibrated on seeded generated scenes of 640 pixels whatever
            ``image_size``, so equal seeds give bit-identical weights at every image size and
            different seeds different ones.
        weights: optional Keras ``.weights.h5`` file saved from the same architecture.

    Returns:
        A ``keras.Model`` named ``yolov5<variant>`` with input ``images`` ``(None, H, W, 3)`` and
        output ``(None, num_predictions(image_size), 5 + num_classes)``.

    Raises:
        TrtflowError: unknown variant, bad class count or image size, missing or mismatching
            weights file.
    """
    if variant not in VARIANTS:
        raise TrtflowError(
            f"unknown YOLOv5 variant {variant!r}", f"use one of {', '.join(VARIANTS)}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise TrtflowError(f"number of classes {num_classes!r} is invalid", "use an integer >= 1")
    _check_image_size(image_size)
    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise TrtflowError(
            f"weights file {weights_path} does not exist", "check the model's path in the config"
        )
    if weights_path is not None and not weights_path.name.endswith(".weights.h5"):
        raise TrtflowError(
            f"weights file {weights_path} is not a Keras .weights.h5 file",
            "save it with model.save_weights('<name>.weights.h5')",
        )

    b = _Builder(*VARIANTS[variant], seed=seed)
    images = keras.Input((image_size, image_size, 3), dtype="float32", name="images")
    x = _Node(images, keras.ops.convert_to_tensor(b.calibration))

    # Backbone
    x = b.conv(x, b.ch(64), 6, 2, "model.0", p=2)  # P1/2
    x = b.conv(x, b.ch(128), 3, 2, "model.1")  # P2/4
    x = b.c3(x, b.ch(128), b.n(3), True, "model.2")
    x = b.conv(x, b.ch(256), 3, 2, "model.3")  # P3/8
    p3 = b.c3(x, b.ch(256), b.n(6), True, "model.4")
    x = b.conv(p3, b.ch(512), 3, 2, "model.5")  # P4/16
    p4 = b.c3(x, b.ch(512), b.n(9), True, "model.6")
    x = b.conv(p4, b.ch(1024), 3, 2, "model.7")  # P5/32
    x = b.c3(x, b.ch(1024), b.n(3), True, "model.8")
    x = b.sppf(x, b.ch(1024), 5, "model.9")

    # Head (PAN)
    h10 = b.conv(x, b.ch(512), 1, 1, "model.10")
    x = b.concat([b.upsample(h10, "model.11"), p4], "model.12")
    x = b.c3(x, b.ch(512), b.n(3), False, "model.13")
    h14 = b.conv(x, b.ch(256), 1, 1, "model.14")
    x = b.concat([b.upsample(h14, "model.15"), p3], "model.16")
    out3 = b.c3(x, b.ch(256), b.n(3), False, "model.17")  # P3/8 small
    x = b.conv(out3, b.ch(256), 3, 2, "model.18")
    x = b.concat([x, h14], "model.19")
    out4 = b.c3(x, b.ch(512), b.n(3), False, "model.20")  # P4/16 medium
    x = b.conv(out4, b.ch(512), 3, 2, "model.21")
    x = b.concat([x, h10], "model.22")
    out5 = b.c3(x, b.ch(1024), b.n(3), False, "model.23")  # P5/32 large

    raws = b.detect([out3, out4, out5], num_classes)
    outputs = YoloDecode(num_classes, (image_size, image_size), name="output0")(raws)
    model = keras.Model(images, outputs, name=f"yolov5{variant}")

    if weights_path is not None:
        try:
            model.load_weights(str(weights_path))
        except ValueError as e:
            reason = str(e).splitlines()[0].rstrip(": ") if str(e) else type(e).__name__
            raise TrtflowError(
                f"weights file {weights_path} does not fit yolov5{variant} with {num_classes} "
                f"classes ({reason})",
                "build the variant and class count the weights were saved from",
            ) from e
    return model
