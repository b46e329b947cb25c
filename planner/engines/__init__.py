"""Renderers that turn a plan's settings into the command lines each engine accepts."""
