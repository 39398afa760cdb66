"""TensorFlow / Keras side: the built-in YOLOv5, frozen GraphDefs, detector discovery, training."""
