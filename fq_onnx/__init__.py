"""fq-onnx: focused quantization for sparse CNNs, as a post-training ONNX compressor."""

__version__ = "0.1.0"

# onnx's checker and shape inference learn fq_onnx.ShiftConv as soon as both packages are
# imported, in either order (fq_onnx/_onnx_hook.py: running models does not need onnx).
from fq_onnx._onnx_hook import register_when_onnx_imported as _register  # noqa: E402

_register()
