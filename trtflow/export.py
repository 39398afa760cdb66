"""Stage "export" (train host): Keras YOLOv5 -> SavedModel -> frozen GraphDef model.pb."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from trtflow.errors import TrtflowError
from trtflow.manifest import atomic_path, read_json, write_manifest

log = logging.getLogger(__name__)

KERAS_SOURCES = ("builtin", "keras")


def build_keras_model(
    source: str,
    image_size: int,
    variant: str = "s",
    classes: int = 80,
    seed: int = 0,
    path: str | None = None,
) -> Any:
    """The Keras model of a zoo entry: the builtin YOLOv5, or a user's .keras / .weights.h5."""
    from trtflow import yolov5

    if path and not Path(path).exists():
        raise TrtflowError(f"{path}: model file not found", "check models.<name>.path in config")
    if source == "builtin" or (source == "keras" and path and path.endswith(".weights.h5")):
        return yolov5.build_yolov5(variant, classes, image_size, seed, weights=path)
    if source == "keras":
        if not path:
            raise TrtflowError(
                "source keras needs a path", "set models.<name>.path to a .keras file"
            )
        import keras

        try:
            model = keras.models.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:
            raise TrtflowError(
                f"{path}: cannot load the Keras model in safe mode ({exc})",
                "save it with model.save('x.keras') using only registered layers (no Lambda)",
            ) from None
        shape = list(model.inputs[0].shape)
        if shape[1:3] != [image_size, image_size]:
            raise TrtflowError(
                f"{path}: model input is {shape}, not {image_size}x{image_size}",
                f"set models.<name>.image_sizes to [{shape[1]}]",
            )
        return model
    raise TrtflowError(f"source {source!r} is not a Keras source", "use builtin or keras")


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
    command = ["trtflow", "export-saved-model", "--out", out_dir] + _flags(options)
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


def _flags(options: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in options.items():
        if v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _freeze_saved_model(saved_model: Path) -> tuple[Any, str, str]:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    saved_model = Path(saved_model)
    if not (saved_model / "saved_model.pb").is_file():
        raise TrtflowError(
            f"{saved_model}: no saved_model.pb in it",
            "point models.<name>.path at the directory that holds saved_model.pb",
        )
    try:
        loaded = tf.saved_model.load(str(saved_model))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        if not (saved_model / "variables").is_dir():
            raise TrtflowError(
                f"{saved_model}: the SavedModel has saved_model.pb but no variables/ folder "
                f"({type(exc).__name__}: {first})",
                "copy the whole SavedModel directory (saved_model.pb and variables/), or export "
                "a frozen .pb and use source: pb",
            ) from None
        raise TrtflowError(
            f"{saved_model}: not a loadable TF SavedModel ({type(exc).__name__}: {first})",
            "re-export it with model.export(...) / tf.saved_model.save, or use a frozen .pb",
        ) from None
    sigs = dict(loaded.signatures)
    if not sigs:
        raise TrtflowError(f"{saved_model}: SavedModel has no signatures", "export it with one")
    fn = sigs.get("serving_default") or sigs.get("serve") or next(iter(sigs.values()))
    frozen = convert_variables_to_constants_v2(fn)
    gd = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    return gd, ",".join(inputs), ",".join(outputs)


def export_pb(
    source_path: str | Path,
    out_pb: str | Path,
    source: str = "builtin",
    image_size: int | None = 640,
    input_name: str | None = None,
    output_name: str | None = None,
    manifest_path: str | Path | None = None,
    box_format: str | None = None,
    decode_layout: str | None = None,
) -> dict[str, Any]:
    """Freeze a SavedModel to ``model.pb``, or validate and copy a user's frozen pb.

    The chosen input/output tensor names, shapes and layout go into the manifest, which the
    later stages read; a wrong or ambiguous name fails here, listing the names that exist.
    The graph is run on test images (``trtflow.discover``): a graph without a [B,N,5+C] output
    stops here; its batch, box format (``None``: discovered) and decode row order
    (``None``: discovered) go into the manifest's ``discovery``, each with its source.
    """
    from trtflow import discover, tfgraph

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
            tmp.write_bytes(gd.SerializeToString())
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
    command = ["trtflow", "export-pb", "--source-path", source_path, "--out", out_pb] + _flags(
        options
    )
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


def pb_io(pb_manifest: str | Path) -> dict[str, Any]:
    """The I/O contract recorded by export_pb."""
    return read_json(pb_manifest)["io"]
