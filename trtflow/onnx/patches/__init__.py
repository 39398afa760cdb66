"""Named ONNX graph ops (onnx-graphsurgeon) that turn a tf2onnx YOLOv5 into a TensorRT-ready ONNX.

``registry`` holds the table of patches and the recipe runner; each family module registers its
patches when imported, so importing this package fills the table.
"""

from trtflow.onnx.patches import batch, cleanup, dtypes, layout, resize, yolo  # noqa: F401  (register)
from trtflow.onnx.patches.registry import PATCHES, PatchOptions, apply_patches, describe_patches

__all__ = ["PATCHES", "PatchOptions", "apply_patches", "describe_patches"]
