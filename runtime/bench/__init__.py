"""Benchmarks of the bundled runtime against the transformers baseline (`qwen35 bench`)."""
