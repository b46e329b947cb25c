"""CLI command modules; each exposes `register(app)` and imports heavy libraries lazily."""
from qwen35.launcher.commands import bench, hardware, plan, demo, launch, profiles, serve

COMMAND_MODULES: list = [plan, hardware, demo, launch, profiles, serve, bench]
