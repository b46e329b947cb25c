"""Session fixtures: real uvicorn servers on free ports in threads (the demo checkpoint is tests/runtime's).

`demo_server` serves the random-weight demo model; `scripted_server` serves the same
tokenizer and chat template with a ScriptedRunner, so reasoning and tool calls can be
tested through the real HTTP, engine and parsing path.
"""
from __future__ import annotations

import json
import logging

import pytest

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.server.settings import ServerSettings, sampling_defaults_from
from qwen35.runtime.tokenizer import load_tokenizer
from scripted_runner import ScriptedRunner

from server_harness import API_KEY, CONTEXT, DEMO_NAME, SCRIPTED_CONTEXT, SCRIPTED_NAME, choose_script, serving


@pytest.fixture(scope="session")
def demo_tokenizer(demo_path):
    return load_tokenizer(demo_path)


def _settings(name: str, checkpoint, **overrides) -> ServerSettings:
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    values = dict(served_model_names=[name], max_model_len=CONTEXT, model_root=str(checkpoint),
                  request_timeout=120.0, max_n=4, sampling_defaults=sampling_defaults_from(generation),
                  max_body_bytes=64 * 1024)
    values.update(overrides)
    return ServerSettings(**values)


@pytest.fixture(scope="session")
def demo_server(demo_path, demo_tokenizer):
    model = load_model(demo_path, progress=False)
    config = EngineConfig(max_running_requests=32, max_queue=64, max_model_len=CONTEXT,
                          prefill_chunk_size=64, max_prefill_tokens=512)
    engine = AsyncEngine(LLMEngine(build_runner(model, config)[0], config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    with serving(engine, demo_tokenizer, _settings(DEMO_NAME, demo_path)) as server:
        yield server


@pytest.fixture(scope="session")
def scripted_server(demo_path, demo_tokenizer):
    runner = ScriptedRunner(demo_tokenizer, choose_script, num_rows=4, max_len=SCRIPTED_CONTEXT)
    config = EngineConfig(max_running_requests=4, max_queue=16, max_model_len=SCRIPTED_CONTEXT)
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    # Scripted logits are one-hot, so greedy picks the same tokens as sampling would, without
    # paying for a full-vocabulary top_k sort on every step.
    settings = _settings(SCRIPTED_NAME, demo_path, max_model_len=SCRIPTED_CONTEXT,
                         sampling_defaults={"temperature": 0.0})
    with serving(engine, demo_tokenizer, settings) as server:
        try:
            yield server
        finally:
            runner.gate.set()


@pytest.fixture(scope="session")
def tight_server(demo_path, demo_tokenizer):
    """One row, one queue place, an API key and a short timeout: for 503, 401 and 504."""
    runner = ScriptedRunner(demo_tokenizer, choose_script, num_rows=1, max_len=CONTEXT)
    config = EngineConfig(max_running_requests=1, max_queue=1, max_model_len=CONTEXT)
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    settings = _settings(SCRIPTED_NAME, demo_path, api_key=API_KEY, request_timeout=1.0,
                         sampling_defaults={"temperature": 0.0})
    with serving(engine, demo_tokenizer, settings) as server:
        try:
            yield server
        finally:
            runner.gate.set()




@pytest.fixture
def server_log():
    """Every WARNING-or-worse record the server, the engine and uvicorn log while the test runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "qwen35")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)
