"""The YOLOv5 training recipe in Keras 3 ops: loss, optimiser step, evaluation (TF or JAX)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path

log = logging.getLogger(__name__)


#: YOLOv5 hyp.scratch-low.yaml (optimizer and loss part; augmentation in images.augment.HYP).
RECIPE: dict[str, float] = {
    "lr0": 0.01,
    "lrf": 0.01,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "box": 0.05,
    "cls": 0.5,
    "obj": 1.0,
}
BALANCE = [4.0, 1.0, 0.4]
NOMINAL_BATCH = 64
PREFETCH = 3  # batches prepared ahead of the accelerator
EMA_DECAY, EMA_TAU = 0.9999, 2000.0


# ---------------------------------------------------------------- loss (keras.ops)
def _bce_logits(x: Any, z: Any) -> Any:
    from keras import ops

    return ops.maximum(x, 0) - x * z + ops.log1p(ops.exp(-ops.abs(x)))


def ciou(p_xy: Any, p_wh: Any, t_xy: Any, t_wh: Any, eps: float = 1e-7) -> Any:
    """Complete IoU of xywh boxes (YOLOv5 bbox_iou(..., CIoU=True)), elementwise."""
    from keras import ops

    p1, p2 = p_xy - p_wh / 2, p_xy + p_wh / 2
    t1, t2 = t_xy - t_wh / 2, t_xy + t_wh / 2
    inter_wh = ops.maximum(ops.minimum(p2, t2) - ops.maximum(p1, t1), 0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    w1, h1 = p_wh[..., 0], p_wh[..., 1] + eps
    w2, h2 = t_wh[..., 0], t_wh[..., 1] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cwh = ops.maximum(p2, t2) - ops.minimum(p1, t1)
    c2 = cwh[..., 0] ** 2 + cwh[..., 1] ** 2 + eps
    rho2 = ops.sum((t_xy - p_xy) ** 2, axis=-1)
    v = (4 / math.pi**2) * (ops.arctan(w2 / h2) - ops.arctan(w1 / h1)) ** 2
    alpha = ops.stop_gradient(v / (v - iou + (1 + eps)))
    return iou - (rho2 / c2 + v * alpha)


def yolo_loss(
    raws: list[Any],
    targets: list[Any],
    anchors: list[list[float]],
    strides: list[int],
    num_classes: int,
    image_size: int,
    hyp: dict[str, float],
) -> tuple[Any, Any]:
    """YOLOv5 ComputeLoss on raw head maps ``[B, ny, nx, na*(5+C)]`` and dense targets.

    Returns (loss x batch size, [box, obj, cls] per image like YOLOv5's logged losses).
    """
    from keras import ops

    nl = len(raws)
    g_box = hyp["box"] * 3 / nl
    g_cls = hyp["cls"] * num_classes / 80 * 3 / nl
    g_obj = hyp["obj"] * (image_size / 640) ** 2 * 3 / nl
    lbox = lobj = lcls = 0.0
    no = 5 + num_classes
    for i, (raw, t) in enumerate(zip(raws, targets, strict=True)):
        na = len(anchors[i]) // 2
        ny, nx = raw.shape[1], raw.shape[2]
        p = ops.reshape(raw, (-1, ny, nx, na, no))
        pairs = np.asarray(anchors[i], np.float32).reshape(na, 2) / strides[i]
        mask = t[..., 0]
        n = ops.maximum(ops.sum(mask), 1.0)
        pxy = ops.sigmoid(p[..., 0:2]) * 2 - 0.5
        pwh = (ops.sigmoid(p[..., 2:4]) * 2) ** 2 * pairs
        iou = ciou(pxy, pwh, t[..., 1:3], t[..., 3:5])
        lbox = lbox + ops.sum(mask * (1.0 - iou)) / n
        tobj = mask * ops.maximum(ops.stop_gradient(iou), 0.0)
        lobj = lobj + ops.mean(_bce_logits(p[..., 4], tobj)) * BALANCE[i]
        if num_classes > 1:
            onehot = ops.one_hot(ops.cast(t[..., 5], "int32"), num_classes)
            bce = ops.sum(_bce_logits(p[..., 5:], onehot), axis=-1)
            lcls = lcls + ops.sum(mask * bce) / (n * num_classes)
    parts = ops.stack([lbox * g_box, lobj * g_obj, ops.convert_to_tensor(lcls) * g_cls])
    batch = ops.cast(ops.shape(raws[0])[0], "float32")
    return ops.sum(parts) * batch, parts


# ---------------------------------------------------------------- backend switch
def _backend_step(fn: Any) -> Any:
    """Compile ``fn(trainable, *rest) -> (loss, aux)`` into ``(loss, aux), grads`` on the
    active Keras backend (JAX or TensorFlow)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.value_and_grad(fn, has_aux=True)
    if backend == "tensorflow":
        import tensorflow as tf

        def value_and_grad(trainable: list[Any], *rest: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                loss, aux = fn(trainable, *rest)
            return (loss, aux), tape.gradient(loss, trainable)

        return value_and_grad
    raise TrtflowError(
        f"Keras backend {backend!r} is not supported for training",
        "set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow",
    )


def _compile(fn: Any) -> Any:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True)


# ---------------------------------------------------------------- the trainer
class Trainer:
    """State and compiled steps of one training run (weights, momentum, EMA as arrays)."""

    def __init__(
        self, model: Any, num_classes: int, image_size: int, hyp: dict[str, float], batch: int
    ) -> None:
        import keras
        from keras import ops

        from trtflow.images import augment
        from trtflow.tf import yolov5

        self.model = model
        self.decode = model.get_layer("output0")
        heads = [model.get_layer(f"model.{yolov5._DETECT_INDEX}.m.{i}") for i in range(3)]
        self.raw_model = keras.Model(model.inputs, [h.output for h in heads])
        self.hyp = hyp
        tv = self.raw_model.trainable_variables
        self.decay_mask = [v.path.endswith("kernel") for v in tv]
        self.bias_mask = [v.path.endswith(("bias", "beta")) for v in tv]
        wd = hyp["weight_decay"] * batch / NOMINAL_BATCH
        anchors, strides = yolov5.ANCHORS, yolov5.STRIDES

        def loss_fn(
            trainable: list[Any], non_trainable: list[Any], x: Any, gains: Any, targets: list[Any]
        ) -> Any:
            x = augment.hsv_jitter(ops.cast(x, "float32") / 255.0, gains)
            raws, non_trainable = self.raw_model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            loss, parts = yolo_loss(raws, targets, anchors, strides, num_classes, image_size, hyp)
            return loss, (parts, non_trainable)

        grad_fn = _backend_step(loss_fn)
        decay_mask, bias_mask = self.decay_mask, self.bias_mask

        def step(state: dict[str, Any], x: Any, gains: Any, targets: list[Any], lr: Any) -> Any:
            """One SGD step (PyTorch semantics: buf = m buf + g; w -= lr (g + m buf))."""
            lr_w, lr_b, momentum, decay = lr[0], lr[1], lr[2], lr[3]
            (_, (parts, non_trainable)), grads = grad_fn(
                state["trainable"], state["non_trainable"], x, gains, targets
            )
            new_w, new_buf = [], []
            for w, g, buf, dm, bm in zip(
                state["trainable"], grads, state["momentum"], decay_mask, bias_mask, strict=True
            ):
                if dm:
                    g = g + wd * w
                buf = momentum * buf + g
                w = w - (lr_b if bm else lr_w) * (g + momentum * buf)
                new_w.append(w)
                new_buf.append(buf)
            ema = [
                decay * e + (1 - decay) * ops.cast(v, e.dtype)
                for e, v in zip(state["ema"], new_w + list(non_trainable), strict=True)
            ]
            new = {
                "trainable": new_w,
                "non_trainable": list(non_trainable),
                "momentum": new_buf,
                "ema": ema,
            }
            return new, parts

        def infer(weights: list[Any], x: Any) -> Any:
            n = len(self.raw_model.trainable_variables)
            raws = self.raw_model.stateless_call(
                weights[:n], weights[n:], ops.cast(x, "float32") / 255.0, training=False
            )[0]
            return self.decode.call(raws)

        self.step = _compile(step)
        self.infer = _compile(infer)
        self.state = {
            "trainable": [ops.convert_to_tensor(v.value) for v in tv],
            "non_trainable": [
                ops.convert_to_tensor(v.value) for v in self.raw_model.non_trainable_variables
            ],
            "momentum": [ops.zeros_like(v.value) for v in tv],
        }
        self.state["ema"] = [
            ops.convert_to_tensor(ops.copy(v))
            for v in self.state["trainable"] + self.state["non_trainable"]
        ]

    # -------------------------------------------------- checkpoints
    def arrays(self) -> dict[str, np.ndarray]:
        from keras import ops

        out = {}
        for key, values in self.state.items():
            for i, v in enumerate(values):
                out[f"{key}/{i}"] = np.asarray(ops.convert_to_numpy(v))
        return out

    def load_arrays(self, data: Any) -> None:
        from keras import ops

        for key, values in self.state.items():
            self.state[key] = [
                ops.convert_to_tensor(data[f"{key}/{i}"]) for i in range(len(values))
            ]

    def assign_ema(self) -> None:
        """Copy the EMA weights and statistics into the Keras model's variables."""
        variables = self.raw_model.trainable_variables + self.raw_model.non_trainable_variables
        for v, e in zip(variables, self.state["ema"], strict=True):
            v.assign(e)


# ---------------------------------------------------------------- evaluation
def _detections(pred: np.ndarray, conf: float, iou: float, max_det: int) -> dict[str, np.ndarray]:
    """YOLOv5 val NMS on one image's decoded output ``[N, 5+C]`` (conf 0.001, IoU 0.6)."""
    from trtflow.images.detections import nms, xywh_to_xyxy

    scores = pred[:, 4:5] * pred[:, 5:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(scores)), cls]
    keep = np.nonzero((best > conf) & (pred[:, 2] >= 2) & (pred[:, 3] >= 2))[0]
    keep = keep[np.argsort(-best[keep], kind="stable")][:3000]
    xyxy = xywh_to_xyxy(pred[keep, :4].astype(np.float64))
    k = nms(xyxy + cls[keep, None] * 4096.0, best[keep], iou)[:max_det]
    return {"boxes": xyxy[k], "scores": best[keep][k].astype(np.float64), "classes": cls[keep][k]}


def evaluate(
    predict: Any,
    images: np.ndarray,
    labels: list[np.ndarray],
    num_classes: int,
    batch: int = 64,
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
) -> dict[str, float]:
    """mAP@.5 and mAP@.5:.95 (pycocotools) of ``predict`` on letterboxed uint8 images."""
    from trtflow.images.detections import coco_map

    dets = []
    for i in range(0, len(images), batch):
        out = np.asarray(predict(images[i : i + batch]))
        dets += [_detections(p, conf, iou, max_det) for p in out]
    refs = [{"boxes": lab[:, 1:5], "classes": lab[:, 0].astype(np.int64)} for lab in labels]
    size = images.shape[1:3]
    return coco_map(refs, dets, num_classes, [tuple(size)] * len(images), max_det)


# ---------------------------------------------------------------- stage function
def _lr_at(
    step: int, epoch: int, steps_per_epoch: int, epochs: int, hyp: dict[str, float], cos_lr: bool
) -> np.ndarray:
    """[lr weights, lr biases, momentum] at a global step, as YOLOv5's warm-up and schedule."""
    from trtflow.images.augment import cosine_lf, linear_lf

    lf = (cosine_lf if cos_lr else linear_lf)(epoch, epochs, hyp["lrf"])
    lr = hyp["lr0"] * lf
    nw = max(round(hyp["warmup_epochs"] * steps_per_epoch), 100) if hyp["warmup_epochs"] else 0
    if step < nw:
        f = step / nw
        return np.array(
            [
                lr * f,
                hyp["warmup_bias_lr"] + (lr - hyp["warmup_bias_lr"]) * f,
                hyp["warmup_momentum"] + (hyp["momentum"] - hyp["warmup_momentum"]) * f,
            ]
        )
    return np.array([lr, lr, hyp["momentum"]])


def _save_checkpoint(
    path: Path,
    trainer: Trainer,
    epoch: int,
    updates: int,
    history: list[dict[str, Any]],
    fingerprint: str,
) -> None:
    keys = list(history[0]) if history else []
    rows = np.array(
        [[np.nan if r[k] is None else r[k] for k in keys] for r in history], np.float64
    ).reshape(len(history), -1)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            epoch=epoch,
            updates=updates,
            history=rows,
            history_keys=np.array(keys),
            fingerprint=fingerprint,
            **trainer.arrays(),
        )
