"""llguidance against xgrammar at Qwen3.5's vocabulary: grammar compile time and next-token mask time.

    python benchmarks/grammar_backends.py [--batches 1 64] [--repeats 20] [--json]

xgrammar is not a dependency of qwen35 (it imports transformers, a test-only package here);
install it into the benchmark's environment to compare (`pip install xgrammar`), otherwise only
llguidance is measured. Both run on the CPU: the mask is computed on the host either way.

Workloads, each the same language for both libraries:
  json_schema  a response_format schema (bounded strings, an enum, an integer range, a list);
  tool_calls   two tools in the qwen3_coder call format (llguidance: the engine's own Lark grammar;
               xgrammar: the same grammar written in its EBNF, which has no inline JSON schema).
Compile: a fresh compile each repeat (no cache), median. Mask: B matchers walk one valid
document token by token; per step, the time to fill all B masks (llguidance: row after row on
the calling thread, as the engine does, and with its thread pool; xgrammar: BatchGrammarMatcher,
which uses its own threads), median over the document's steps. The tokenizer is
the demo checkpoint's: Qwen3.5's 248,077 ids (byte-level BPE with the same added tokens) and
logits 248,320 wide; the real checkpoint's trie has different words, so treat the figures as
the shape of the cost, and rerun with --tokenizer on a real tokenizer.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Annotated, Literal

import llguidance
import torch
from pydantic import BaseModel, ConfigDict, Field

from qwen35.runtime.engine.grammar.constraints import json_schema_constraint
from qwen35.runtime.engine.grammar.tool_grammar import tool_choice_constraint
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS
from qwen35.runtime.tokenizer.demo_tokenizer import demo_tokenizer_json

VOCAB = 248320


class Person(BaseModel):
    """The json_schema workload, as a client's `parse(response_format=Person)` sends it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=130)
    colour: Literal["red", "green", "blue"]
    tags: list[Annotated[str, Field(max_length=12)]] = Field(max_length=4)
    member: bool


SCHEMA = Person.model_json_schema()
SCHEMA_DOCUMENT = '{"name": "Ada Lovelace", "age": 36, "colour": "green", "tags": ["maths", "engines"], "member": true}'
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "required": ["city", "days"], "properties": {
            "city": {"type": "string", "maxLength": 16}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"enum": ["celsius", "fahrenheit"]}}}}},
    {"type": "function", "function": {"name": "set_alarm", "parameters": {
        "type": "object", "required": ["hour"], "properties": {
            "hour": {"type": "integer", "minimum": 0, "maximum": 23}, "loud": {"type": "boolean"}}}}},
]
TOOL_DOCUMENT = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
                 "</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>")
# The same language as tool_choice_constraint(TOOLS, "required", parallel_tool_calls=False) builds in Lark.
TOOL_EBNF = r'''
root ::= "<tool_call>" "\n<function=" (weather | alarm) "</function>\n" "</tool_call>"
weather ::= "get_weather>\n" "<parameter=city>\n" [^<]{0,16} "\n</parameter>\n" "<parameter=days>\n" [1-7] "\n</parameter>\n" ("<parameter=unit>\n" ("celsius" | "fahrenheit") "\n</parameter>\n")?
alarm ::= "set_alarm>\n" "<parameter=hour>\n" ([0-9] | "1" [0-9] | "2" [0-3]) "\n</parameter>\n" ("<parameter=loud>\n" ("true" | "false") "\n</parameter>\n")?
'''


def timed(function, repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class Llguidance:
    """llguidance as the engine drives it: one LLMatcher per row, masks filled one row after another."""

    name = "llguidance"

    def __init__(self, tokenizer_json: str):
        start = time.perf_counter()
        self.tokenizer = llguidance.LLTokenizer(tokenizer_json, n_vocab=VOCAB, eos_token=list(DEFAULT_STOP_TOKEN_IDS))
        self.setup_seconds = time.perf_counter() - start
        self.grammars = {
            "json_schema": llguidance.LLMatcher.grammar_from_json_schema(json_schema_constraint(SCHEMA).source),
            "tool_calls": llguidance.LLMatcher.grammar_from_lark(
                tool_choice_constraint(TOOLS, "required", parallel_tool_calls=False).source),
        }

    def compile(self, workload: str):
        return self.grammars[workload]  # a grammar's compile is its first matcher

    def matchers(self, compiled, batch: int):
        matchers = [llguidance.LLMatcher(self.tokenizer, compiled, log_level=0) for _ in range(batch)]
        assert not matchers[0].is_error(), matchers[0].get_error()
        return matchers

    def compile_seconds(self, workload: str, repeats: int) -> float:
        return timed(lambda: self.matchers(self.grammars[workload], 1), repeats)

    def fill(self, matchers, mask: torch.Tensor) -> None:
        for row, matcher in enumerate(matchers):
            matcher.unsafe_compute_mask_ptr(mask[row].data_ptr(), mask.shape[1] * 4)

    def walk(self, matchers, tokens: list[int]) -> list[float]:
        mask = torch.empty(len(matchers), (VOCAB + 31) // 32, dtype=torch.int32)
        steps = []
        for token in tokens:
            start = time.perf_counter()
            self.fill(matchers, mask)
            steps.append(time.perf_counter() - start)
            assert all(m.consume_token(token) for m in matchers), matchers[0].get_error()
        return steps


class LlguidancePool(Llguidance):
    """llguidance with its thread pool filling the rows in parallel (not what the engine uses: bitmask.py)."""

    name = "llguidance-pool"

    def __init__(self, tokenizer_json: str):
        super().__init__(tokenizer_json)
        self.executor = llguidance.LLExecutor()

    def fill(self, matchers, mask: torch.Tensor) -> None:
        work = [(matcher, row) for row, matcher in enumerate(matchers)]
        self.executor.unsafe_compute_mask_ptr(work, mask.data_ptr(), mask.shape[1] * 4, len(matchers))


class Xgrammar:
    """xgrammar's GrammarMatcher per row, BatchGrammarMatcher to fill the masks."""

    name = "xgrammar"

    def __init__(self, tokenizer_json: str):
        import xgrammar
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        self.xgr = xgrammar
        hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json))
        start = time.perf_counter()
        info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=VOCAB, stop_token_ids=list(DEFAULT_STOP_TOKEN_IDS))
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.setup_seconds = time.perf_counter() - start
        self.batch = xgrammar.BatchGrammarMatcher()

    def compile(self, workload: str):
        if workload == "json_schema":
            return self.compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False,
                                                     separators=(", ", ": "))
        return self.compiler.compile_grammar(TOOL_EBNF)

    def matchers(self, compiled, batch: int):
        return [self.xgr.GrammarMatcher(compiled) for _ in range(batch)]

    def compile_seconds(self, workload: str, repeats: int) -> float:
        return timed(lambda: self.compile(workload), repeats)

    def walk(self, matchers, tokens: list[int]) -> list[float]:
        mask = self.xgr.allocate_token_bitmask(len(matchers), VOCAB)
        steps = []
        for token in tokens:
            start = time.perf_counter()
            self.batch.batch_fill_next_token_bitmask(matchers, mask)
            steps.append(time.perf_counter() - start)
            assert all(m.accept_token(token) for m in matchers)
        return steps


def backends(tokenizer_json: str) -> list:
    found = [Llguidance(tokenizer_json), LlguidancePool(tokenizer_json)]
    try:
        found.append(Xgrammar(tokenizer_json))
    except ImportError as missing:
        print(f"xgrammar not measured ({missing}); pip install xgrammar to compare", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=20, help="fresh compiles per figure")
    parser.add_argument("--tokenizer", help="a tokenizer.json to use instead of the demo's")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    tokenizer_json = open(args.tokenizer).read() if args.tokenizer else demo_tokenizer_json()
    from tokenizers import Tokenizer

    encode = Tokenizer.from_str(tokenizer_json)
    documents = {name: encode.encode(text, add_special_tokens=False).ids
                 for name, text in (("json_schema", SCHEMA_DOCUMENT), ("tool_calls", TOOL_DOCUMENT))}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"llguidance {llguidance.get_version() if hasattr(llguidance, 'get_version') else '?'}")
    print(f"tokenizer: {args.tokenizer or 'demo'} ({encode.get_vocab_size()} ids), masks {VOCAB} wide")
    rows = []
    for backend in backends(tokenizer_json):
        print(f"{backend.name}: tokenizer setup {backend.setup_seconds * 1e3:.0f} ms", flush=True)
        for workload, tokens in documents.items():
            row = {"backend": backend.name, "workload": workload, "tokens": len(tokens),
                   "compile_ms": backend.compile_seconds(workload, args.repeats) * 1e3}
            compiled = backend.compile(workload)
            for batch in args.batches:
                steps = backend.walk(backend.matchers(compiled, batch), tokens)
                row[f"mask_us_b{batch}"] = statistics.median(steps) * 1e6
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = ["backend", "workload", "tokens", "compile ms"] + [f"mask us/step b{b}" for b in args.batches]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["backend"], row["workload"], str(row["tokens"]), f"{row['compile_ms']:.2f}"]
        cells += [f"{row[f'mask_us_b{b}']:,.1f}" for b in args.batches]
        print("| " + " | ".join(cells) + " |")
    ratios = {}
    for row in rows:
        ratios.setdefault(row["workload"], {})[row["backend"]] = row
    for workload, pair in ratios.items():
        if "xgrammar" in pair:
            fast, slow = pair["llguidance"], pair.get("xgrammar")
            print(f"{workload}: xgrammar / llguidance compile {slow['compile_ms'] / fast['compile_ms']:.2f}x, "
                  + ", ".join(f"mask b{b} {slow[f'mask_us_b{b}'] / fast[f'mask_us_b{b}']:.2f}x" for b in args.batches))


if __name__ == "__main__":
    main()
