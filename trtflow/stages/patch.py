"""Stage "patch" (convert host): run a model's patch recipe on the raw tf2onnx ONNX."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trtflow.core.commands import stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path, write_manifest
from trtflow.onnx.io import load_onnx

log = logging.getLogger(__name__)


def patch_onnx(
    onnx_in: str | Path,
    onnx_out: str | Path,
    patches: list[str],
    image_size: int,
    batch: int | str = "dynamic",
    box_format: str | None = None,
    nms: dict[str, Any] | None = None,
    manifest_path: str | Path | None = None,
    pb_manifest: str | Path | None = None,
) -> dict[str, Any]:
    """Apply the recipe ``patches`` (names from trtflow.onnx.patches.PATCHES, in order) and
    write the patched ONNX; ``nms`` holds the efficient_nms options.

    ``box_format`` None takes the one export_pb recorded in ``pb_manifest`` (discovered or
    configured), else pixels; a normalized source gets ``denormalize_boxes`` if the recipe
    lacks it, so every patched ONNX emits pixels. The recorded decode row order goes to the
    patches (``lean_decode`` leaves other orders alone; ``fold_decode`` measures its own).
    """
    import onnx

    from trtflow.onnx.io import io_contract
    from trtflow.onnx.patches.registry import PatchOptions, apply_patches, check_recipe
    from trtflow.tf.discover import recorded

    started = time.time()
    check_recipe(patches, "models.<name>.patches")
    configured_recipe = list(patches)
    if box_format is None:
        box_format = recorded(pb_manifest, "box_format", "pixels")
        log.info("box_format %s (from %s)", box_format, pb_manifest or "the default")
    recipe = with_denormalize(configured_recipe, box_format)
    decode_layout = recorded(pb_manifest, "decode_layout", None)
    if not Path(onnx_in).is_file():
        raise TrtflowError(f"{onnx_in}: ONNX file not found", "run convert_pb_to_onnx first")
    model = load_onnx(onnx_in)
    nms = nms or {}
    options = PatchOptions(
        image_size=image_size,
        batch=batch,
        score_threshold=nms.get("score_threshold", 0.25),
        iou_threshold=nms.get("iou_threshold", 0.45),
        max_detections=nms.get("max_detections", 100),
        decode_layout=decode_layout,
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
    command = stage_command(
        "patch", onnx_in=onnx_in, onnx_out=onnx_out, patches=configured_recipe,
        image_size=image_size, batch=batch, box_format=box_format, nms=nms,
        pb_manifest=pb_manifest,
    )  # fmt: skip
    return write_manifest(
        onnx_out,
        stage="patch_onnx",
        inputs={"onnx": onnx_in, **({"pb_manifest": pb_manifest} if pb_manifest else {})},
        options=opts,
        command=command,
        started=started,
        extra={
            "nodes_before": nodes_before,
            "nodes": len(patched.graph.node),
            "box_format": "pixels" if "denormalize_boxes" in recipe else box_format,
            "source_box_format": box_format,
            "configured_recipe": configured_recipe,
            "decode_layout": decode_layout,
            "has_nms": "efficient_nms" in recipe,
            "io": contract,
            "steps": report,
        },
        manifest_path=manifest_path,
    )


def with_denormalize(recipe: list[str], box_format: str) -> list[str]:
    """The recipe, with ``denormalize_boxes`` added after ``nchw_input`` for normalised boxes."""
    if box_format != "normalized" or "denormalize_boxes" in recipe:
        return list(recipe)
    at = recipe.index("nchw_input") + 1 if "nchw_input" in recipe else 0
    out = [*recipe[:at], "denormalize_boxes", *recipe[at:]]
    log.info(
        "recipe: added denormalize_boxes (box_format normalized; patched ONNX emits pixels): %s",
        ", ".join(out),
    )
    return out
