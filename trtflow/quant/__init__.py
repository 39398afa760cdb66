"""INT8: Q/DQ quantization, TensorRT integer arithmetic on the CPU, kernel probes, caches, mAP."""
