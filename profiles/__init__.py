"""qwen35.profiles."""
