"""Incremental output parsers: Qwen3 reasoning blocks and qwen3_coder tool calls."""
from qwen35.runtime.server.parsers.reasoning import ReasoningDelta, ReasoningParser, prompt_opens_reasoning
from qwen35.runtime.server.parsers.tool_calls import ToolCall, ToolCallDelta, ToolCallParser, ToolParseDelta

__all__ = ["ReasoningDelta", "ReasoningParser", "ToolCall", "ToolCallDelta", "ToolCallParser", "ToolParseDelta",
           "prompt_opens_reasoning"]
