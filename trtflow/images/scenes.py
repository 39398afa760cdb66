"""Synthetic scenes: seeded pictures of shapes for calibration, parity and the seeded model init."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One procedurally generated scene: sky/ground gradients, texture and coloured shapes."""
    from PIL import Image, ImageDraw, ImageFilter

    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    base = top * (1 - yy) + bottom * yy + np.zeros((1, width, 3), np.float32)
    horizon = int(height * rng.uniform(0.3, 0.7))
    base[horizon:] = base[horizon:] * 0.5 + rng.uniform(0, 255, 3) * 0.5
    base += rng.normal(0, rng.uniform(2, 18), (height, width, 1))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 12))):
        s = rng.uniform(0.05, 0.45) * min(height, width)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        box = [
            cx - s / 2,
            cy - s * rng.uniform(0.3, 1.0),
            cx + s / 2,
            cy + s * rng.uniform(0.3, 1.0),
        ]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=int(rng.integers(0, 4)))
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        elif kind == 2:
            pts = [
                (cx + s * np.cos(a), cy + s * np.sin(a)) for a in np.sort(rng.uniform(0, 6.283, 5))
            ]
            draw.polygon(pts, fill=colour)
        else:
            draw.line([(box[0], box[1]), (box[2], box[3])], fill=colour, width=int(s / 8) + 1)
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return np.asarray(im)
