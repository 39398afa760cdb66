"""Stage "patch" (convert host): run a model's patch recipe on the raw tf2onnx ONNX."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trtflow.errors import TrtflowError
from trtflow.manifest import atomic_path, write_manifest

log = logging.getLogger(__name__)


def patch_onnx(
    onnx_in: str | Path,
    onnx_out: str | Path,
    recipe: list[str],
    image_size: int,
    batch: int | str = "dynamic",
    box_format: str = "pixels",
    nms: dict[str, Any] | None = None,
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Apply ``recipe`` (names from trtflow.patches.PATCHES) and write the patched ONNX."""
    import onnx

    from trtflow.patches import PATCHES, PatchOptions, apply_patches, io_contract

    started = time.time()
    unknown = [p for p in recipe if p not in PATCHES]
    if unknown:
        raise TrtflowError(
            f"unknown patch {unknown[0]!r} in models.<name>.patches",
            f"use one of: {', '.join(PATCHES)}",
        )
    if box_format == "normalized" and "denormalize_boxes" not in recipe:
        log.warning("box_format is normalized but the recipe has no denormalize_boxes patch")
    if not Path(onnx_in).is_file():
        raise TrtflowError(f"{onnx_in}: ONNX file not found", "run convert_pb_to_onnx first")
    model = onnx.load(str(onnx_in))
    nms = nms or {}
    options = PatchOptions(
        image_size=image_size,
        batch=batch,
        score_threshold=nms.get("score_threshold", 0.25),
        iou_threshold=nms.get("iou_threshold", 0.45),
        max_detections=nms.get("max_detections", 100),
    )
    nodes_before = len(model.graph.node)
    patched, report = apply_patches(model, list(recipe), options)  # onnx.checker-validated
    onnx_out = Path(onnx_out)
    with atomic_path(onnx_out) as tmp:
        onnx.save(patched, str(tmp))
    contract = io_contract(patched)
    for t in contract:
        log.info("%s %s %s %s", t["kind"], t["name"], t["shape"], t["dtype"])
    log.info("nodes %d -> %d", nodes_before, len(patched.graph.node))
    opts = {"recipe": list(recipe), "image_size": image_size, "batch": batch, "nms": nms}
    command = ["trtflow", "patch", "--onnx", onnx_in, "--out", onnx_out, "--image-size",
               image_size, "--batch", batch, "--recipe", ",".join(recipe)]  # fmt: skip
    return write_manifest(
        onnx_out,
        stage="patch_onnx",
        inputs={"onnx": onnx_in},
        options=opts,
        command=command,
        started=started,
        extra={
            "nodes_before": nodes_before,
            "nodes": len(patched.graph.node),
            "box_format": "pixels" if "denormalize_boxes" in recipe else box_format,
            "has_nms": "efficient_nms" in recipe,
            "io": contract,
            "steps": report,
        },
        manifest_path=manifest_path,
    )
