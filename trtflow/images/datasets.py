"""Detection datasets: the built-in labelled shapes set, and YOLO / COCO readers.

The built-in set is generated on the fly (numpy + Pillow, no download): filled shapes of
``SHAPE_CLASSES`` composited onto procedural backgrounds (gradients, horizon, grain, lines, soft
blobs) at varied scale (10-45 % of the short side), position, aspect, rotation and colour, with
partial overlap; every box is the exact bounding box of the pixels drawn. Deterministic by seed:
image ``i`` of a split depends only on (seed, split, i). ``make_dataset`` writes it in YOLO
format (``images/<split>/*.jpg`` + ``labels/<split>/*.txt`` with ``class cx cy w h`` normalised)
and the validation split also as COCO JSON (``val.json``, file names relative to ``out_dir``),
which the INT8 gate reads as its labelled set.

Readers return one ``Sample`` per image (path, boxes xyxy in pixels, classes) from a YOLO images
folder (labels found the YOLOv5 way: the last ``images`` path part becomes ``labels``, suffix
``.txt``) or a COCO JSON. A malformed label line stops with one line naming the file and line.

Imports only numpy and Pillow (lazily): data workers never load TensorFlow.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trtflow.core.errors import TrtflowError

log = logging.getLogger(__name__)


#: Class index -> name of the built-in set.
SHAPE_CLASSES: list[str] = [
    "circle",
    "ring",
    "triangle",
    "square",
    "star",
    "cross",
    "heart",
    "crescent",
]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: Image sizes (h, w) of the built-in set, cycled: square and both orientations.
_SIZES = [(320, 320), (240, 320), (320, 256), (288, 320), (320, 240)]
_SPLIT_SALT = {"train": 1, "val": 2}


class Sample(NamedTuple):
    """One labelled image: boxes ``[n, 4]`` xyxy in pixels, classes ``[n]`` int."""

    path: Path
    boxes: np.ndarray
    classes: np.ndarray


# ---------------------------------------------------------------- built-in generator
def _background(rng: np.random.Generator, h: int, w: int) -> Any:
    from PIL import Image, ImageDraw, ImageFilter

    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    base = top * (1 - yy) + bottom * yy + np.zeros((1, w, 3), np.float32)
    if rng.random() < 0.6:
        horizon = int(h * rng.uniform(0.3, 0.7))
        base[horizon:] = base[horizon:] * 0.5 + rng.uniform(0, 255, 3) * 0.5
    base += rng.normal(0, rng.uniform(2, 20), (h, w, 1))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(0, 6))):  # thin lines: clutter that is not an object
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(2)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))


def _polygon(points: np.ndarray, angle: float, sx: float, sy: float) -> np.ndarray:
    """Unit-square polygon points rotated by ``angle`` and scaled (around the origin)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return rot * np.array([sx, sy])


def _shape_mask(rng: np.random.Generator, cls: int, size: int, aspect: float) -> Any:
    """An 'L' mask of one shape, drawn 4x supersampled for smooth edges, cropped to its pixels."""
    from PIL import Image, ImageDraw

    ss = 4
    side = int(size * 1.6) * ss
    im = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(im)
    r = size * ss / 2
    cx = cy = side / 2
    sx, sy = r * math.sqrt(aspect), r / math.sqrt(aspect)
    angle = float(rng.uniform(-0.35, 0.35))
    name = SHAPE_CLASSES[cls]

    def poly(points: np.ndarray, rotate: bool = True) -> None:
        p = _polygon(points, angle if rotate else 0.0, sx, sy) + (cx, cy)
        d.polygon([tuple(map(float, q)) for q in p], fill=255)

    if name in ("circle", "ring", "crescent"):
        d.ellipse([cx - sx, cy - sy, cx + sx, cy + sy], fill=255)
        if name == "ring":
            k = rng.uniform(0.45, 0.65)
            d.ellipse([cx - sx * k, cy - sy * k, cx + sx * k, cy + sy * k], fill=0)
        elif name == "crescent":
            off = rng.uniform(0.45, 0.7) * (1 if rng.random() < 0.5 else -1)
            ox = cx + off * sx
            d.ellipse([ox - sx, cy - sy * 1.05, ox + sx, cy + sy * 1.05], fill=0)
    elif name == "triangle":
        a = np.array([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
        poly(np.stack([np.cos(a), np.sin(a)], 1))
    elif name == "square":
        poly(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.85)
    elif name == "star":
        a = -math.pi / 2 + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        poly(np.stack([np.cos(a) * rad, np.sin(a) * rad], 1))
    elif name == "cross":
        t = 0.33
        pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
               (-1, t), (-1, -t), (-t, -t)]  # fmt: skip
        poly(np.array(pts, np.float64))
    else:  # heart
        u = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        hx = 16 * np.sin(u) ** 3
        hy = -(13 * np.cos(u) - 5 * np.cos(2 * u) - 2 * np.cos(3 * u) - np.cos(4 * u))
        pts = np.stack([hx, hy + 2.5], 1) / 16.5
        poly(pts)
    im = im.resize((side // ss, side // ss), Image.Resampling.BOX)
    box = im.point(lambda v: 255 if v >= 128 else 0).getbbox()
    return im.crop(box) if box else None


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Largest share of ``box`` or of an earlier box covered by their intersection."""
    worst = 0.0
    area = (box[2] - box[0]) * (box[3] - box[1])
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw > 0 and ih > 0:
            oa = (o[2] - o[0]) * (o[3] - o[1])
            worst = max(worst, iw * ih / min(area, oa))
    return worst


def shapes_image(seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of ``split`` of the built-in set: (HWC uint8 RGB, boxes xyxy, classes).

    1 to 8 shapes; a shape may cover up to 30 % of an earlier one (the earlier box stays its
    full extent, as a partly hidden object is labelled in real data).
    """
    from PIL import Image

    rng = np.random.default_rng([seed, _SPLIT_SALT[split], index])
    h, w = _SIZES[index % len(_SIZES)]
    im = _background(rng, h, w)
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(1, 9))):
        cls = int(rng.integers(0, len(SHAPE_CLASSES)))
        size = int(min(h, w) * rng.uniform(0.10, 0.45))
        mask = _shape_mask(rng, cls, size, float(np.exp(rng.uniform(-0.35, 0.35))))
        if mask is None:
            continue
        mw, mh = mask.size
        if mw >= w or mh >= h:
            continue
        for _try in range(10):
            x0, y0 = int(rng.integers(0, w - mw + 1)), int(rng.integers(0, h - mh + 1))
            box = np.array([x0, y0, x0 + mw, y0 + mh], np.float64)
            if _overlap(box, boxes) <= 0.3:
                break
        else:
            continue
        region = np.asarray(im.crop((x0, y0, x0 + mw, y0 + mh)), np.float32).reshape(-1, 3)
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - region.mean(0)).mean() < 60:  # keep it visible
            colour = 255 - colour
        fill = np.clip(colour + rng.normal(0, rng.uniform(0, 12), (mh, mw, 3)), 0, 255)
        im.paste(Image.fromarray(fill.astype(np.uint8)), (x0, y0), mask)
        boxes.append(box)
        classes.append(cls)
    b = np.stack(boxes) if boxes else np.zeros((0, 4))
    return np.asarray(im), b, np.asarray(classes, np.int64)


def yolo_lines(boxes: np.ndarray, classes: np.ndarray, h: int, w: int) -> str:
    """YOLO label text: one ``class cx cy w h`` line per box, normalised to 0-1."""
    out = []
    for b, c in zip(boxes, classes, strict=True):
        cx, cy = (b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h
        bw, bh = (b[2] - b[0]) / w, (b[3] - b[1]) / h
        out.append(f"{int(c)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
    return "".join(out)


def coco_json(entries: list[tuple[str, int, int, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """COCO instances dict of (file name, h, w, boxes xyxy, classes); category id = class + 1."""
    images, annotations = [], []
    for i, (name, h, w, boxes, classes) in enumerate(entries):
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for b, c in zip(boxes, classes, strict=True):
            bbox = [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(c) + 1, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": cats}


# ---------------------------------------------------------------- readers
def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def label_path(image: Path) -> Path:
    """YOLOv5's rule: the last ``images`` part of the path becomes ``labels``, suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _is_class(value: float, num_classes: int | None) -> bool:
    if value != int(value) or value < 0:
        return False
    return num_classes is None or value < num_classes


def parse_yolo_labels(path: Path, num_classes: int | None = None) -> np.ndarray:
    """Rows ``[class, cx, cy, w, h]`` of a YOLO label file; a missing file means no objects.

    Raises:
        TrtflowError: a line that is not five numbers, a class that is not an integer in range,
            or coordinates outside 0-1 — naming the file and the line.
    """
    if not path.is_file():
        return np.zeros((0, 5))
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        problem = None
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values, problem = [], "has a field that is not a number"
        if problem is None and len(values) != 5:
            problem = f"has {len(values)} fields, expected 5 (class cx cy w h)"
        elif problem is None and not _is_class(values[0], num_classes):
            limit = f" in 0..{num_classes - 1}" if num_classes else ""
            problem = f"has class {fields[0]}, expected an integer{limit}"
        elif problem is None and not all(0.0 <= v <= 1.0 for v in values[1:]):
            problem = "has coordinates outside 0-1 (YOLO labels are normalised)"
        elif problem is None and (values[3] <= 0 or values[4] <= 0):
            problem = "has a box of zero width or height"
        if problem:
            raise TrtflowError(
                f"label file {path} line {n} {problem}: {line.strip()!r}",
                "fix or delete that line (format: class cx cy w h, normalised to 0-1)",
            )
        rows.append(values)
    return np.asarray(rows, np.float64).reshape(-1, 5)


def read_yolo(folder: str | Path, num_classes: int | None = None) -> list[Sample]:
    """Samples of a YOLO images folder (sorted by name), labels parsed and checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrtflowError(
            f"dataset images folder {folder} does not exist",
            "give a YOLO images folder (e.g. data/images/train, labels in data/labels/train) "
            "or a COCO JSON file",
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TrtflowError(f"dataset images folder {folder} has no images", "add JPEG/PNG files")
    out = []
    for f in files:
        rows = parse_yolo_labels(label_path(f), num_classes)
        h, w = _image_size(f)
        cx, cy, bw, bh = (rows[:, i] for i in range(1, 5))
        boxes = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                          (cy + bh / 2) * h], 1)  # fmt: skip
        out.append(Sample(f, boxes.reshape(-1, 4), rows[:, 0].astype(np.int64)))
    return out


def read_coco(annotations: str | Path, images: str | Path | None = None) -> list[Sample]:
    """Samples of a COCO instances JSON; class i = the i-th smallest category id.

    Images are looked up in ``images`` (default: the JSON's folder) by ``file_name``.
    """
    annotations = Path(annotations)
    try:
        data = json.loads(annotations.read_text())
        cats = sorted(c["id"] for c in data["categories"])
        index = {c: i for i, c in enumerate(cats)}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for a in data.get("annotations", []):
            by_image.setdefault(a["image_id"], []).append(a)
        root = Path(images) if images else annotations.parent
        out = []
        for im in sorted(data["images"], key=lambda d: d["id"]):
            anns = [a for a in by_image.get(im["id"], []) if not a.get("iscrowd", 0)]
            b = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            b[:, 2:] += b[:, :2]
            cls = np.asarray([index[a["category_id"]] for a in anns], np.int64)
            out.append(Sample(root / im["file_name"], b, cls))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrtflowError(
            f"{annotations} is not a COCO instances JSON ({type(exc).__name__}: {exc})",
            "give a COCO JSON with images, annotations (bbox x y w h) and categories",
        ) from None
    missing = [s.path for s in out if not s.path.is_file()]
    if missing:
        raise TrtflowError(
            f"{len(missing)} images of {annotations} are missing, e.g. {missing[0]}",
            "pass the folder holding them (--images / train.images)",
        )
    return out


def read_split(spec: str | Path, num_classes: int | None = None) -> list[Sample]:
    """A split given as a YOLO images folder or a COCO JSON file (images beside it)."""
    spec = Path(spec)
    if spec.suffix.lower() == ".json":
        samples = read_coco(spec)
        if num_classes is not None:
            bad = [s for s in samples if len(s.classes) and s.classes.max() >= num_classes]
            if bad:
                raise TrtflowError(
                    f"{spec} has more categories than the model's {num_classes} classes",
                    "set the model's classes to the dataset's category count",
                )
        return samples
    return read_yolo(spec, num_classes)
