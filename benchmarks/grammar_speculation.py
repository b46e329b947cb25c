"""MTP speculation under a grammar: drafts accepted and engine steps, against no speculation, in the same run.

    python benchmarks/grammar_speculation.py [--requests 4] [--draft-tokens 2] [--max-tokens 200] [--json]

The demo checkpoint (random weights, one MTP layer, Qwen3.5's tokenizer) decodes `--requests`
requests under a JSON schema and under a forced tool call (tool_choice "required"), at
temperature 0 and 1, once with MTP speculation of k draft tokens and once without. The drafter
draws from its logits masked by the grammar, so the grammar's forced tokens (keys, tags,
punctuation) are drafted and accepted; with random weights nothing else is, so the acceptance
here measures what the grammar gives speculation, not a trained head's quality. Printed per
workload: drafts proposed and accepted, the acceptance rate, engine steps and wall time with and
without speculation, and the ratio of steps.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from qwen35.runtime.demo.checkpoint import write_demo_checkpoint
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.grammar.compiler import GrammarCompiler
from qwen35.runtime.engine.grammar.constraints import json_schema_constraint
from qwen35.runtime.engine.grammar.tool_grammar import tool_choice_constraint
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.tokenizer.tokenizer import load_tokenizer

from grammar_backends import SCHEMA, VOCAB

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city", "days"], "properties": {
        "city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]}}}}}]


def run(model, tokenizer, compiler, constraint, requests: int, draft_tokens: int, temperature: float,
        max_tokens: int) -> dict:
    """Decode the requests to the end; the engine's draft counters, its steps and the wall time."""
    config = EngineConfig(max_running_requests=requests, max_model_len=1024, speculative_tokens=draft_tokens)
    engine = LLMEngine(build_runner(model, config)[0], config, tokenizer, DEFAULT_STOP_TOKEN_IDS, compiler)
    params = [SamplingParams(temperature=temperature, seed=seed, max_tokens=max_tokens, constraint=constraint)
              for seed in range(requests)]
    seqs = engine.add_request([1, 2, 3, 4], params)
    steps, start = 0, time.perf_counter()
    while engine.has_work:
        engine.step()
        steps += 1
    return {"steps": steps, "seconds": time.perf_counter() - start, "drafted": engine.draft_tokens,
            "accepted": engine.accepted_tokens, "tokens": sum(len(seq.output_ids) for seq in seqs),
            "finished": sorted({seq.finish_reason for seq in seqs})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--draft-tokens", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        path = write_demo_checkpoint(f"{scratch}/demo", seed=0)
        model = load_model(path, progress=False)
        tokenizer = load_tokenizer(path)
    compiler = GrammarCompiler.for_tokenizer(tokenizer, VOCAB, DEFAULT_STOP_TOKEN_IDS)
    workloads = {"json_schema": json_schema_constraint(SCHEMA),
                 "tool_call": tool_choice_constraint(TOOLS, "required", parallel_tool_calls=False)}
    rows = []
    for name, constraint in workloads.items():
        for temperature in (0.0, 1.0):
            plain = run(model, tokenizer, compiler, constraint, args.requests, 0, temperature, args.max_tokens)
            speculated = run(model, tokenizer, compiler, constraint, args.requests, args.draft_tokens, temperature,
                             args.max_tokens)
            rows.append({"workload": name, "temperature": temperature, "plain": plain, "speculative": speculated})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: demo checkpoint (random weights, 1 MTP layer), {args.requests} requests, "
          f"k={args.draft_tokens}, max_tokens {args.max_tokens}")
    print("| workload | T | drafted | accepted | rate | steps, k=0 | steps, speculative | step ratio | s, k=0 | s, speculative |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        plain, spec = row["plain"], row["speculative"]
        rate = spec["accepted"] / spec["drafted"] if spec["drafted"] else 0.0
        print(f"| {row['workload']} | {row['temperature']:g} | {spec['drafted']} | {spec['accepted']} | {rate:.2f} | "
              f"{plain['steps']} | {spec['steps']} | {spec['steps'] / plain['steps']:.2f} | {plain['seconds']:.2f} | "
              f"{spec['seconds']:.2f} |")


if __name__ == "__main__":
    main()
