"""Measuring models on data: ``data`` (readers and preprocessing for every data form) and
``evaluate`` (accuracy, agreement, SQNR, size, latency and memory, original against compressed)."""
