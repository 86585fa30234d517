"""The ShiftConv node (docs/SHIFTCONV.md) on the Python side: ``schema`` (its onnx schema and
shape inference), ``validate`` (the checks the C++ kernel makes), ``geometry`` (ONNX Conv shape
arithmetic, as custom_ops/src/plan/conv_geometry.cc), ``reference`` (the numpy reference, an onnx
``OpRun``) and ``intmode`` (integer mode's exact arithmetic)."""
