"""YOLOv5 training augmentation and target assignment, in numpy + Pillow (no TensorFlow).

``Augmenter`` turns dataset samples into training batches the way YOLOv5's
``LoadImagesAndLabels`` does with ``hyp.scratch-low.yaml``: ``load_image`` (long side to the
model size), mosaic of four images on a 2s x 2s canvas around a random centre, then
``random_perspective`` (scale and translation only) back to s x s with ``box_candidates``
filtering, left-right flip; without mosaic a letterbox then the same affine. Pillow does the
pixel work (it releases the GIL, so a thread pool scales). HSV jitter (YOLOv5's
``augment_hsv``) draws its gains here and is applied by ``hsv_jitter`` (keras.ops) inside the
training step, on the accelerator.

``build_targets`` is YOLOv5's ``ComputeLoss.build_targets`` written densely: per level a
``[B, ny, nx, na, 6]`` array (mask, x and y offset in the cell, w and h in grid units, class)
for every label, every anchor within ``anchor_t`` of its shape, at the centre cell and the two
neighbouring cells nearest the centre. Where two labels land on the same cell and anchor the last
one wins (YOLOv5 counts both in the box and class losses; its objectness target keeps one too).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trtflow.images.datasets import Sample

PAD = 114

#: YOLOv5 hyp.scratch-low.yaml (the augmentation and loss part).
HYP: dict[str, float] = {
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "translate": 0.1,
    "scale": 0.5,
    "fliplr": 0.5,
    "flipud": 0.0,
    "mosaic": 1.0,
    "anchor_t": 4.0,
}


class Augmenter:
    """Batches of (uint8 NHWC images, labels ``[n, 6]`` = image, class, x1 y1 x2 y2 pixels)."""

    def __init__(self, samples: list[Sample], image_size: int, hyp: dict[str, float]) -> None:
        from trtflow.images.io import load_rgb

        self.samples = samples
        self.size = image_size
        self.hyp = {**HYP, **hyp}
        self._load_rgb = load_rgb
        self._cache: dict[int, tuple[Any, float]] = {}

    def load_image(self, i: int) -> tuple[Any, np.ndarray, np.ndarray]:
        """Image i resized so its long side is the model size (YOLOv5 load_image), boxes scaled."""
        from PIL import Image

        if i not in self._cache:
            rgb = self._load_rgb(self.samples[i].path)
            h, w = rgb.shape[:2]
            r = self.size / max(h, w)
            im = Image.fromarray(rgb)
            if r != 1:
                size = (max(1, round(w * r)), max(1, round(h * r)))
                im = im.resize(size, Image.Resampling.BILINEAR)
            self._cache[i] = (im, r)
        im, r = self._cache[i]
        return im, self.samples[i].boxes * r, self.samples[i].classes

    def preload(self, pool: Any) -> None:
        list(pool.map(self.load_image, range(len(self.samples))))

    def letterboxed(self, i: int) -> tuple[Any, np.ndarray, np.ndarray]:
        """Image i letterboxed (centred, pad 114) to the square model size, boxes shifted."""
        from PIL import Image

        im, boxes, classes = self.load_image(i)
        s = self.size
        canvas = Image.new("RGB", (s, s), (PAD, PAD, PAD))
        dx, dy = (s - im.width) // 2, (s - im.height) // 2
        canvas.paste(im, (dx, dy))
        return canvas, boxes + np.array([dx, dy, dx, dy]), classes

    def mosaic(self, i: int, rng: np.random.Generator) -> tuple[Any, np.ndarray, np.ndarray]:
        """YOLOv5 load_mosaic: image i and three random ones around a random centre."""
        from PIL import Image

        s = self.size
        canvas = Image.new("RGB", (2 * s, 2 * s), (PAD, PAD, PAD))
        xc, yc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, 2))
        ids = [i, *rng.integers(0, len(self.samples), 3).tolist()]
        boxes, classes = [], []
        for k, j in enumerate(ids):
            im, b, c = self.load_image(j)
            w, h = im.size
            x0 = xc - w if k in (0, 2) else xc
            y0 = yc - h if k in (0, 1) else yc
            canvas.paste(im, (x0, y0))  # Pillow clips what falls outside
            boxes.append(b + np.array([x0, y0, x0, y0]))
            classes.append(c)
        return canvas, np.concatenate(boxes), np.concatenate(classes)

    def affine(self, im: Any, boxes: np.ndarray, rng: np.random.Generator) -> tuple:
        """random_perspective with scale and translation only: output s x s.

        The input's centre goes to the origin, is scaled by ``g`` and moved to ``t``; boxes are
        mapped, clipped and kept when ``box_candidates`` accepts them.
        """
        from PIL import Image

        s = self.size
        g = rng.uniform(1 - self.hyp["scale"], 1 + self.hyp["scale"])
        t = rng.uniform(0.5 - self.hyp["translate"], 0.5 + self.hyp["translate"], 2) * s
        c = np.array([im.width / 2, im.height / 2])
        # output = (input - c) * g + t; the part of the input that lands inside s x s is
        # resized (on whole output pixels) and pasted onto a pad-coloured canvas
        o0 = np.clip(np.ceil((0 - c) * g + t), 0, s).astype(int)
        o1 = np.clip(np.floor((np.array(im.size) - c) * g + t), 0, s).astype(int)
        out = Image.new("RGB", (s, s), (PAD, PAD, PAD))
        if (o1 > o0).all():
            src0, src1 = (o0 - t) / g + c, (o1 - t) / g + c
            box = (*src0.tolist(), *src1.tolist())
            part = im.resize(
                (int(o1[0] - o0[0]), int(o1[1] - o0[1])), Image.Resampling.BILINEAR, box=box
            )
            out.paste(part, (int(o0[0]), int(o0[1])))
        new = (boxes.reshape(-1, 2, 2) - c) * g + t
        new = np.clip(new.reshape(-1, 4), 0, s)
        return out, new, box_candidates(boxes * g, new)

    def hsv_gains(self, rng: np.random.Generator) -> np.ndarray:
        """YOLOv5 augment_hsv gains (hue, saturation, value), applied in the training step."""
        return rng.uniform(-1, 1, 3) * [self.hyp["hsv_h"], self.hyp["hsv_s"], self.hyp["hsv_v"]] + 1

    def train_sample(self, i: int, rng: np.random.Generator) -> tuple[Any, ...]:
        """One augmented training image (s x s uint8), its labels ``[n, 5]`` (class, xyxy) and
        its HSV gains (``hsv_jitter`` applies them where the batch is trained)."""
        from PIL import ImageOps

        if rng.random() < self.hyp["mosaic"]:
            im, boxes, classes = self.mosaic(i, rng)
        else:
            im, boxes, classes = self.letterboxed(i)
        im, boxes, keep = self.affine(im, boxes.reshape(-1, 4), rng)
        boxes, classes = boxes[keep], classes[keep]
        s = self.size
        if rng.random() < self.hyp["fliplr"]:
            im = ImageOps.mirror(im)
            boxes = np.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], 1)
        if rng.random() < self.hyp["flipud"]:
            im = ImageOps.flip(im)
            boxes = np.stack([boxes[:, 0], s - boxes[:, 3], boxes[:, 2], s - boxes[:, 1]], 1)
        labels = np.concatenate([classes[:, None].astype(np.float64), boxes], 1)
        return np.asarray(im), labels, self.hsv_gains(rng)

    def val_sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Validation image i letterboxed (no augmentation) and its labels ``[n, 5]``."""
        im, boxes, classes = self.letterboxed(i)
        return np.asarray(im), np.concatenate([classes[:, None].astype(np.float64), boxes], 1)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    wh_thr: float = 2,
    ar_thr: float = 100,
    area_thr: float = 0.1,
) -> np.ndarray:
    """YOLOv5 box_candidates: boxes > wh_thr px, kept area > area_thr, aspect < ar_thr."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def build_targets(
    labels: list[np.ndarray],
    image_size: int,
    anchors: list[list[float]],
    strides: list[int],
    anchor_t: float = 4.0,
) -> list[np.ndarray]:
    """Dense YOLOv5 targets per level: ``[B, ny, nx, na, 6]`` (mask, tx, ty, tw, th, class).

    ``labels[b]`` is ``[n, 5]``: class, x1 y1 x2 y2 in pixels of the s x s input.
    """
    out = []
    g = 0.5
    rows = [
        np.concatenate([np.full((len(lab), 1), b, np.float64), lab.reshape(-1, 5)], 1)
        for b, lab in enumerate(labels)
    ]
    lab = np.concatenate(rows) if rows else np.zeros((0, 6))
    shifts = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]) * g
    for level, stride in enumerate(strides):
        n = image_size // stride
        pairs = np.asarray(anchors[level], np.float64).reshape(-1, 2) / stride
        t = np.zeros((len(labels), n, n, len(pairs), 6), np.float32)
        xy = (lab[:, 2:4] + lab[:, 4:6]) / 2 / stride
        wh = (lab[:, 4:6] - lab[:, 2:4]) / stride
        for a, pair in enumerate(pairs):
            r = wh / pair
            ok = np.maximum(r, 1 / r).max(1) < anchor_t
            gxy, gwh, cls, img = xy[ok], wh[ok], lab[ok, 1], lab[ok, 0].astype(np.int64)
            inv = n - gxy
            frac, ifrac = gxy % 1, inv % 1
            selections = [
                np.ones(len(gxy), bool),
                (frac[:, 0] < g) & (gxy[:, 0] > 1),  # left neighbour
                (frac[:, 1] < g) & (gxy[:, 1] > 1),  # upper
                (ifrac[:, 0] < g) & (inv[:, 0] > 1),  # right
                (ifrac[:, 1] < g) & (inv[:, 1] > 1),  # lower
            ]
            for sel, shift in zip(selections, shifts, strict=True):
                cell = np.floor(gxy[sel] - shift).astype(np.int64).clip(0, n - 1)
                where = (img[sel], cell[:, 1], cell[:, 0], a)
                t[where + (0,)] = 1.0
                t[where + (slice(1, 3),)] = gxy[sel] - cell
                t[where + (slice(3, 5),)] = gwh[sel]
                t[where + (5,)] = cls[sel]
        out.append(t)
    return out


def cosine_lf(epoch: float, epochs: int, lrf: float) -> float:
    """YOLOv5's one_cycle lr factor: 1 -> lrf over ``epochs``."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


def linear_lf(epoch: float, epochs: int, lrf: float) -> float:
    return (1 - epoch / epochs) * (1.0 - lrf) + lrf


def hsv_jitter(x: Any, gains: Any) -> Any:
    """YOLOv5 augment_hsv on NHWC RGB 0-1 images: hue x gain (mod 1), saturation and value x
    gain (clipped), per-image gains ``[B, 3]``. keras.ops, so it runs in the compiled step."""
    from keras import ops

    hsv = ops.image.rgb_to_hsv(x)
    g = ops.reshape(gains, (-1, 1, 1, 3))
    h = ops.mod(hsv[..., 0:1] * g[..., 0:1], 1.0)
    sv = ops.clip(hsv[..., 1:3] * g[..., 1:3], 0.0, 1.0)
    return ops.image.hsv_to_rgb(ops.concatenate([h, sv], axis=-1))
