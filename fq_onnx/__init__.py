"""fq-onnx: focused quantization for sparse CNNs, as a post-training ONNX compressor."""

__version__ = "0.1.0"

# onnx's checker and shape inference learn fq_onnx.ShiftConv as soon as the package is imported.
from fq_onnx import schema as _schema  # noqa: E402

_schema.register()
