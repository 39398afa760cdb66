"""TensorRT: targets and versions, trtexec, the Python API, TensorRT-RTX, transport, checks."""
