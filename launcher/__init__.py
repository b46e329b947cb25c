"""qwen35.launcher."""
