"""ONNX side: the I/O contract, ONNX Runtime sessions, plugins, output comparison, patches."""
