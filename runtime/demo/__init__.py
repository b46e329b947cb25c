"""A tiny random-weight Qwen3.5 checkpoint in the real Hugging Face layout, for demos and tests."""
from qwen35.runtime.demo.checkpoint import demo_weights, shard_file_name, write_demo_checkpoint
from qwen35.runtime.demo.config import DEMO_SHAPES, DEMO_THINKING_DEFAULT, demo_config, demo_config_dict

__all__ = [
    "DEMO_SHAPES",
    "DEMO_THINKING_DEFAULT",
    "demo_config",
    "demo_config_dict",
    "demo_weights",
    "shard_file_name",
    "write_demo_checkpoint",
]
