"""The compression math, pure numpy: ``prune`` (masks), ``focus`` (mixture fit, focused and shift
level sets), ``reconstruct`` (OBS pruning and GPTQ rounding on input statistics), ``compress``
(one layer end to end), ``allocate`` (per-layer sparsity and bits for a size or accuracy target)."""
