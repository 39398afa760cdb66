"""Keras YOLOv5 -> SavedModel -> frozen GraphDef: the TensorFlow side of the export stage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trtflow.core.errors import TrtflowError

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
    from trtflow.tf import yolov5

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
