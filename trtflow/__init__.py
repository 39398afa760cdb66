"""trtflow: TensorFlow YOLOv5 -> ONNX -> patched ONNX -> TensorRT engines.

Importing the package is cheap: TensorFlow, ONNX, ONNX Runtime and TensorRT are imported lazily
by the stage modules that need them, so the Snakemake DAG builds on any host.
"""

from trtflow.errors import TrtflowError

__version__ = "0.1.0"
__all__ = ["TrtflowError", "__version__"]
