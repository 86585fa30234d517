"""``fq_onnx.runtime`` is the runtime-only package ``fq_onnx_runtime`` (runtime/): one module.

Kept under this name so ``from fq_onnx import runtime`` and ``fq_onnx.runtime.session(...)``
keep working; deploy hosts install and import ``fq_onnx_runtime`` alone.
"""

import sys

import fq_onnx_runtime

sys.modules[__name__] = fq_onnx_runtime
