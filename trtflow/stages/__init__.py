"""One thin module per ``rules/<stage>.smk``: load inputs, call libraries, write artifact, manifest.

Stages import libraries (core, tf, images, onnx, quant, trt, reporting), never each other.
"""
