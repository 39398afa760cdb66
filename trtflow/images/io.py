"""Images -> YOLOv5-preprocessed arrays (for calibration, parity, the gate and training).

Images are read from a folder (JPEG/PNG), sampled by config and preprocessed exactly like
YOLOv5 inference (``utils.augmentations.letterbox`` with ``auto=False``): resize keeping the
aspect ratio with OpenCV ``INTER_LINEAR`` semantics (half-pixel centres, no antialiasing), pad
to the square model size with 114, RGB, scale to 0-1, NCHW float32. The first ``count`` sampled
images become ``calib.npy`` (what the quantizer calibrates on), the next ``holdout`` become
``holdout.npy`` (what the INT8 accuracy gate compares on) — never the same image in both.

``make_sample_images`` writes the built-in image set of the default zoo: procedurally generated
scenes (no download, no dataset package), saved as JPEG and PNG so the same loading code runs.
Needs Pillow (imported lazily).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path

log = logging.getLogger(__name__)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SAMPLINGS = ("random", "sorted", "spread")
PAD_VALUE = 114


# ---------------------------------------------------------------- images
def list_images(folder: str | Path) -> list[Path]:
    """JPEG/PNG files directly in ``folder``, sorted by name; raise if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrtflowError(
            f"calibration image folder {folder} does not exist",
            "set calibration.images to a folder of JPEG/PNG images (or null for the built-in set)",
        )
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise TrtflowError(
            f"calibration image folder {folder} has no JPEG/PNG images",
            "put .jpg/.jpeg/.png files directly in it (subfolders are not searched)",
        )
    return files


def sample_images(
    files: list[Path], count: int, holdout: int, seed: int = 0, sampling: str = "random"
) -> tuple[list[Path], list[Path]]:
    """Choose ``count`` calibration and ``holdout`` held-aside images (disjoint).

    random: a seeded shuffle; sorted: the first by name; spread: evenly spaced over the names.
    """
    if sampling not in SAMPLINGS:
        raise TrtflowError(f"unknown sampling {sampling!r}", f"use one of: {', '.join(SAMPLINGS)}")
    need = count + holdout
    if len(files) < need:
        folder = files[0].parent if files else "the folder"
        raise TrtflowError(
            f"calibration image folder {folder} has {len(files)} JPEG/PNG images, "
            f"calibration.count {count} + calibration.holdout {holdout} need {need}",
            f"add at least {need - len(files)} images or lower calibration.count/holdout",
        )
    if sampling == "random":
        order = np.random.default_rng(seed).permutation(len(files))[:need]
        chosen = [files[i] for i in order]
    elif sampling == "sorted":
        chosen = files[:need]
    else:
        idx = np.linspace(0, len(files) - 1, need).round().astype(int)
        chosen = [files[i] for i in idx]
    return chosen[:count], chosen[count:]


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as HWC uint8 RGB (EXIF orientation applied, like cv2.imread)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I"):  # 16-bit PNG -> 8-bit like cv2.imread
                arr = np.asarray(im, dtype=np.uint32) >> 8
                im = Image.fromarray(arr.astype(np.uint8))
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise TrtflowError(
            f"calibration image {path} cannot be read ({type(exc).__name__}: {exc})",
            "remove the file from the folder or re-save it as JPEG/PNG",
        ) from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise TrtflowError(f"calibration image {path} is empty", "remove the file from the folder")
    return rgb


# ---------------------------------------------------------------- preprocessing
def resize_linear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(..., INTER_LINEAR) in numpy: half-pixel centres, edge clamp, no antialias."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.copy()

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    y0, y1, fy = axis(h, height)
    x0, x1, fx = axis(w, width)
    f = img.astype(np.float32)
    rows = f[y0] * (1 - fy)[:, None, None] + f[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def letterbox(
    img: np.ndarray, new_size: int, pad_value: int = PAD_VALUE
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """YOLOv5 letterbox (auto=False, scaleup=True) to a square: (image, ratio, (pad_w, pad_h))."""
    h, w = img.shape[:2]
    r = min(new_size / h, new_size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (new_size - new_w) / 2, (new_size - new_h) / 2
    if (h, w) != (new_h, new_w):
        img = resize_linear(img, new_h, new_w)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = np.full((new_h + top + bottom, new_w + left + right, 3), pad_value, dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = img
    return out, r, (dw, dh)


def preprocess(rgb: np.ndarray, image_size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """HWC uint8 RGB -> CHW float32 0-1 letterboxed to ``image_size`` (and ratio, pad)."""
    boxed, r, pad = letterbox(rgb, image_size)
    return np.ascontiguousarray(boxed.transpose(2, 0, 1), dtype=np.float32) / 255.0, r, pad


def preprocess_files(files: list[Path], image_size: int) -> np.ndarray:
    """Preprocessed NCHW float32 array of ``files`` (empty list -> shape (0, 3, S, S))."""
    out = np.empty((len(files), 3, image_size, image_size), dtype=np.float32)
    for i, f in enumerate(files):
        out[i] = preprocess(load_rgb(f), image_size)[0]
    return out


def _save_npy(path: str | Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def load_array(path: str | Path, what: str = "calibration array") -> np.ndarray:
    """Read a .npy written by make_calibration_data; raise one clear error if unusable."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TrtflowError(
            f"{what} {path} cannot be read ({exc})", "rerun make_calibration_data"
        ) from None
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.dtype != np.float32 or len(arr) == 0:
        raise TrtflowError(
            f"{what} {path} has shape {arr.shape} {arr.dtype}, expected N x 3 x S x S float32",
            "rerun make_calibration_data",
        )
    return arr


# ---------------------------------------------------------------- layouts
def image_layout(shape: list[Any]) -> str | None:
    """``"NCHW"`` or ``"NHWC"`` for a 4-D image input shape with 3 channels (None if neither)."""
    if len(shape) == 4 and shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if len(shape) == 4 and shape[3] == 3 and shape[1] != 3:
        return "NHWC"
    return None


def explain_image_layout(shape: list[Any] | None, image_size: int | None = None) -> tuple[str, str]:
    """``image_layout`` with its evidence, for the log: ``("NHWC" | "NCHW" | "unknown", why)``.
    Where no single dim is the 3 channels, two dims equal to the image size decide."""
    if shape is None or len(shape) != 4:
        return "unknown", f"rank {len(shape) if shape is not None else '?'}, not an image batch"
    _, d1, d2, d3 = shape
    same = " = the image size"
    layout = image_layout(shape)
    if layout == "NHWC":
        return layout, f"dim 3 is the 3 channels, dims 1-2 {d1}x{d2}" + (
            same if d1 == d2 == image_size else ""
        )
    if layout == "NCHW":
        return layout, f"dim 1 is the 3 channels, dims 2-3 {d2}x{d3}" + (
            same if d2 == d3 == image_size else ""
        )
    size = f"{image_size}x{image_size}"
    if image_size and d1 == d2 == image_size:
        return "NHWC", f"dims 1-2 are the image size {size}, dim 3 is {d3}"
    if image_size and d2 == d3 == image_size:
        return "NCHW", f"dims 2-3 are the image size {size}, dim 1 is {d1}"
    return "unknown", f"no single dim 1 or 3 is 3 channels, and no two dims are {size}"


def to_layout(x: np.ndarray, layout: str, shape: list[Any]) -> np.ndarray:
    """Images ``x`` (in ``layout``, "NCHW" or "NHWC") as an input of ``shape`` takes them."""
    wanted = image_layout(shape)
    if wanted is None or wanted == layout:
        return x
    axes = (0, 2, 3, 1) if layout == "NCHW" else (0, 3, 1, 2)
    return np.ascontiguousarray(x.transpose(axes))
