"""Tokenizer loading and chat-template rendering for Qwen3.5 checkpoints, plus the demo tokenizer builder."""
from qwen35.runtime.tokenizer.chat_template import ChatTemplate, chat_template_text, load_chat_template
from qwen35.runtime.tokenizer.demo_tokenizer import build_demo_tokenizer, write_demo_tokenizer
from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKEN_IDS, ADDED_TOKENS, TOKENIZER_ID_COUNT
from qwen35.runtime.tokenizer.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "ADDED_TOKENS",
    "ADDED_TOKEN_IDS",
    "TOKENIZER_ID_COUNT",
    "ChatTemplate",
    "Tokenizer",
    "build_demo_tokenizer",
    "chat_template_text",
    "load_chat_template",
    "load_tokenizer",
    "write_demo_tokenizer",
]
