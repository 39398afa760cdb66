"""Stage "export" (train host): Keras YOLOv5 -> SavedModel -> frozen GraphDef model.pb."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from trtflow.core.commands import stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path, write_manifest
from trtflow.tf.freeze import _freeze_saved_model, build_keras_model

log = logging.getLogger(__name__)


def export_saved_model(
    out_dir: str | Path,
    source: str = "builtin",
    image_size: int = 640,
    variant: str = "s",
    classes: int = 80,
    seed: int = 0,
    path: str | None = None,
    manifest_path: str | Path | None = None,
) -> Path:
    """Build/load the Keras model and write a TF SavedModel with Keras 3's ``model.export``."""
    started = time.time()
    model = build_keras_model(source, image_size, variant, classes, seed, path)
    log.info(
        "model %s: input %s output %s, %d parameters",
        model.name,
        model.inputs[0].shape,
        model.outputs[0].shape,
        model.count_params(),
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
    options = {
        "source": source,
        "image_size": image_size,
        "variant": variant,
        "classes": classes,
        "seed": seed,
        "path": path,
    }
    command = stage_command("export-saved-model", out_dir=out_dir, **options)
    write_manifest(
        out_dir,
        stage="export_saved_model",
        inputs={"path": path} if path else {},
        options=options,
        command=command,
        started=started,
        extra={"parameters": int(model.count_params())},
        manifest_path=manifest_path,
    )
    return out_dir


def export_pb(
    source_path: str | Path,
    out_pb: str | Path,
    source: str = "builtin",
    image_size: int | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    manifest_path: str | Path | None = None,
    box_format: str | None = None,
    decode_layout: str | None = None,
) -> dict[str, Any]:
    """Freeze a SavedModel to ``model.pb``, or validate and copy a user's frozen pb.

    ``image_size`` None is the size the graph's input fixes.
    The chosen input/output tensor names, shapes and layout go into the manifest, which the
    later stages read; a wrong or ambiguous name fails here, listing the names that exist.
    The graph is run on test images (``trtflow.tf.discover``): a graph without a [B,N,5+C] output
    stops here; its batch, box format (``None``: discovered) and decode row order
    (``None``: discovered) go into the manifest's ``discovery``, each with its source.
    """
    from trtflow.tf import discover
    from trtflow.tf import graph as tfgraph

    started = time.time()
    source_path = Path(source_path)
    if not source_path.exists():
        raise TrtflowError(
            f"{source_path}: model file not found", "check models.<name>.path in config"
        )
    if source == "pb":
        gd = tfgraph.read_graph_def(source_path)
    else:
        if not source_path.is_dir():
            raise TrtflowError(
                f"{source_path}: a SavedModel is a directory, this is a file",
                "use source: pb for a frozen graph file",
            )
        gd, ins, outs = _freeze_saved_model(source_path)
        log.info("froze %s: inputs %s outputs %s", source_path, ins, outs)
    chosen_in, chosen_out = tfgraph.resolve_io(gd, input_name, output_name, str(source_path))
    io = tfgraph.describe_io(gd, chosen_in, chosen_out)
    image_size = _check_image_size(io, image_size, source_path)
    runner = tfgraph.FrozenGraphRunner(gd, chosen_in, chosen_out)
    found = discover.discover_detector(
        runner, io, image_size, source_path, box_format, decode_layout
    )
    out_pb = Path(out_pb)
    with atomic_path(out_pb) as tmp:
        if source == "pb":
            shutil.copyfile(source_path, tmp)
        else:
            # deterministic: the attr maps in a fixed order, so a rerun is byte-identical
            tmp.write_bytes(gd.SerializeToString(deterministic=True))
    log.info(
        "contract: input %s %s (%s), output %s %s",
        io.input_name,
        io.input_shape,
        io.layout,
        io.output_name,
        io.output_shape,
    )
    options = {
        "source": source,
        "image_size": image_size,
        "input_name": input_name,
        "output_name": output_name,
        "box_format": box_format,
        "decode_layout": decode_layout,
    }
    command = stage_command("export-pb", source_path=source_path, out_pb=out_pb, **options)
    return write_manifest(
        out_pb,
        stage="export_pb",
        inputs={"source": source_path},
        options=options,
        command=command,
        started=started,
        extra={
            "io": io.as_dict(),
            "nodes": len(gd.node),
            "discovery": {k: f.as_dict() for k, f in found.items()},
        },
        manifest_path=manifest_path,
    )


def _check_image_size(io: Any, image_size: int | None, source: Path) -> int:
    """The image size: the given one, which a graph with fixed spatial dims must match."""
    shape = io.input_shape
    if not shape or len(shape) != 4:
        raise TrtflowError(
            f"{source}: input {io.input_name} has shape {shape}, expected a 4-D image batch",
            "set models.<name>.input_name to the image input",
        )
    spatial = shape[1:3] if io.layout == "nhwc" else shape[2:4]
    fixed = all(d > 0 for d in spatial)
    if image_size is None:
        if not (fixed and spatial[0] == spatial[1]):
            raise TrtflowError(
                f"{source}: input {io.input_name} is {shape}: no square image size in the graph",
                "give the size (models.<name>.image_sizes, or --image-size)",
            )
        image_size = spatial[0]
    if fixed and spatial != [image_size, image_size]:
        raise TrtflowError(
            f"{source}: input {io.input_name} is {spatial[0]}x{spatial[1]}, "
            f"config asks for {image_size}",
            f"set models.<name>.image_sizes to [{spatial[0]}], or remove it "
            "(a pb's size is read from its graph)",
        )
    return image_size
