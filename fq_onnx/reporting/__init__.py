"""Telling people what a model holds: ``inspect`` (per-layer tables of original and compressed
models), ``report`` (the HTML conversion report) and ``svg`` (its charts)."""
