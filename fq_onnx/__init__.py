"""fq-onnx: focused quantization for sparse CNNs, as a post-training ONNX compressor."""

__version__ = "0.1.0"
