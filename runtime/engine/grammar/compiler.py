"""Compile Constraints into llguidance matchers for one tokenizer, cached by constraint.

llguidance builds a grammar's lexer and parser tables when an `LLMatcher` is made; that is the
compile step (about a millisecond for a small JSON schema at Qwen3.5's 248K vocabulary). A
compiled grammar keeps that matcher untouched as a template, and each sequence follows a
`deep_copy` of it, which costs microseconds. The tokenizer's token trie is built once per
compiler (about two seconds at 248K ids), so the engine makes one compiler, on first use.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import llguidance

from qwen35.runtime.engine.grammar.constraints import Constraint, GrammarError
from qwen35.runtime.engine.grammar.matcher import ClosingTokens, GrammarMatcher

DEFAULT_CACHE_SIZE = 256


@dataclass
class CompileStats:
    """What the compiler has done since it was made."""

    compiles: int = 0
    cache_hits: int = 0
    compile_seconds: float = 0.0  # summed over compiles


class CompiledGrammar:
    """One constraint's compiled grammar: a template matcher that sequences copy."""

    def __init__(self, constraint: Constraint, template: llguidance.LLMatcher, compile_seconds: float,
                 closers: ClosingTokens):
        self.constraint = constraint
        self.template = template
        self.compile_seconds = compile_seconds
        self.closers = closers

    def matcher(self, in_reasoning: bool = False, budget: int | None = None) -> GrammarMatcher:
        """A fresh matcher at the grammar's start; with in_reasoning it engages after `</think>`; with a budget
        (the sequence's max_tokens) it closes the grammar before the budget runs out."""
        return GrammarMatcher(self.template.deep_copy(), in_reasoning, budget, self.closers)


class GrammarCompiler:
    """An llguidance tokenizer, and the compiled grammars of the most recent constraints (LRU)."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, cache_size: int = DEFAULT_CACHE_SIZE):
        self.tokenizer = tokenizer
        self.closers = ClosingTokens.for_tokenizer(tokenizer)
        self.cache_size = cache_size
        self.stats = CompileStats()
        self._cache: OrderedDict[Constraint, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_tokenizer(cls, tokenizer, vocab_size: int, stop_token_ids: Sequence[int],
                      cache_size: int = DEFAULT_CACHE_SIZE) -> GrammarCompiler:
        """A compiler over the runtime Tokenizer's tokenizer.json, masks `vocab_size` wide (the logits' width).

        stop_token_ids: the tokens a finished grammar allows (the engine's end-of-sequence ids).
        """
        backend = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size,
                                         eos_token=sorted(stop_token_ids))
        return cls(backend, cache_size)

    def compile(self, constraint: Constraint) -> tuple[CompiledGrammar, bool]:
        """The constraint's compiled grammar, and whether this call compiled it (False: from the cache).

        Raises GrammarError naming the problem when llguidance refuses the grammar.
        """
        with self._lock:
            cached = self._cache.get(constraint)
            if cached is not None:
                self._cache.move_to_end(constraint)
                self.stats.cache_hits += 1
                return cached, False
        start = time.perf_counter()
        template = llguidance.LLMatcher(self.tokenizer, _grammar_text(constraint), log_level=0)
        seconds = time.perf_counter() - start
        if template.is_error():
            param = constraint.param or constraint.kind
            raise GrammarError(f"'{param}' cannot be used: {_first_lines(template.get_error())}", param,
                               "fix the schema or pattern, or leave out the keywords named")
        compiled = CompiledGrammar(constraint, template, seconds, self.closers)
        with self._lock:
            self._cache[constraint] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self.stats.compiles += 1
            self.stats.compile_seconds += seconds
        return compiled, True


def _first_lines(message: str, limit: int = 400) -> str:
    """llguidance's error without the parser state and grammar dump it appends, at most `limit` characters."""
    message = message.split("\n<state>")[0].strip()
    return message if len(message) <= limit else message[:limit] + "..."


def _grammar_text(constraint: Constraint) -> str:
    """The constraint in llguidance's grammar form (its JSON grammar text)."""
    try:
        if constraint.kind == "json_schema":
            return llguidance.LLMatcher.grammar_from_json_schema(constraint.source)
        if constraint.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(constraint.source)
        if constraint.kind == "grammar":  # GBNF is converted to Lark; Lark passes through
            return llguidance.grammar_from("grammar", constraint.source)
        if constraint.kind == "structural_tag":
            tags = [llguidance.StructTag(trigger=tag["trigger"], begin=tag["begin"], grammar=tag["schema"],
                                         end=tag["end"]) for tag in json.loads(constraint.source)]
            # Lark text: every structure's grammar is a schema (dict), so no side grammars.
            return llguidance.LLMatcher.grammar_from_lark(llguidance.StructTag.to_grammar(tags))
        return llguidance.LLMatcher.grammar_from_lark(constraint.source)
    except ValueError as error:
        raise GrammarError(f"'{constraint.param or constraint.kind}' cannot be used: {error}",
                           constraint.param or constraint.kind) from None
