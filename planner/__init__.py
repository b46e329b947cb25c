"""qwen35.planner."""
