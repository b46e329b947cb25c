"""Kernels, one folder per op: a plain torch `reference.py` (the semantics) and, later, a fast version."""
