"""The runtime engine: requests, scheduling, model running, sampling and text output."""
