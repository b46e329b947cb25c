"""Contract tests: the planner's command lines against the engines' real argument parsers."""
