"""qwen35.runtime."""
