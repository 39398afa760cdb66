"""Feeding any number of images to a graph whose batch may be fixed."""

from __future__ import annotations

from typing import Any

from trtflow.core.errors import TrtflowError


def in_chunks(run: Any, x: Any, batch: int | None, pad: bool = False) -> Any:
    """``run`` over ``x`` in chunks of a graph's fixed ``batch`` (None: all at once).

    A graph exported with the batch fixed at 1 only takes one image per call; the results (an
    array, or a list of arrays) are concatenated along the batch axis, so callers feed any
    number of images. With ``pad``, a last partial chunk is padded with copies of its last
    image (their results dropped); without, ``len(x)`` must be a multiple of ``batch``.
    """
    import numpy as np

    if batch is None or len(x) == batch:
        return run(x)
    if len(x) % batch and not pad:
        raise TrtflowError(
            f"{len(x)} images cannot be fed in chunks of the graph's fixed batch {batch}",
            f"use a multiple of {batch} images (parity.batch)",
        )
    parts = []
    for i in range(0, len(x), batch):
        part = x[i : i + batch]
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.repeat(part[-1:], batch - n, axis=0)])
        out = run(part)
        parts.append([o[:n] for o in out] if isinstance(out, (list, tuple)) else out[:n])
    if isinstance(parts[0], (list, tuple)):
        return [np.concatenate(field) for field in zip(*parts, strict=True)]
    return np.concatenate(parts)
