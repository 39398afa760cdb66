"""trtflow: TensorFlow YOLOv5 -> ONNX -> patched ONNX -> TensorRT engines.

Importing the package is cheap: TensorFlow, ONNX, ONNX Runtime and TensorRT are imported lazily
by the stage modules that need them, so the Snakemake DAG builds on any host.
"""

import os

from trtflow.core.errors import TrtflowError

# Quiet TensorFlow/absl C++ info lines in job logs (set before any stage imports TF).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
__all__ = ["TrtflowError", "__version__"]
