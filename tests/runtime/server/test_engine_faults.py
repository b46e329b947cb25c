"""A fault injected into the engine step for one request, while another streams.

The engine ends the sequences of a failing step (finish_reason "error"): their cache state is no
longer trusted. What the server must guarantee around that: every one of them gets a clean error
(a 500 error object, or an error event and [DONE] on a stream), requests outside the failing step
carry on untouched, and the engine keeps serving afterwards.
"""
import json
import threading
from contextlib import contextmanager

import httpx

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import DEFAULT_STOP_TOKEN_IDS, LLMEngine
from qwen35.runtime.server.settings import ServerSettings
from scripted_runner import ScriptedRunner
from server_harness import SCRIPTED_CONTEXT, SCRIPTED_NAME, choose_script, serving, wait_for

CHAT = "/v1/chat/completions"


class FaultyRunner(ScriptedRunner):
    """Fails any decode step that holds a sequence whose prompt says [fault] (its first token passes),
    once the gate lets the step through."""

    def logits(self, seqs):
        if any(seq.output_ids for seq in seqs):
            self.gate.wait(timeout=60)
        if any(seq.output_ids and "[fault]" in self.tokenizer.decode(seq.prompt_ids) for seq in seqs):
            raise RuntimeError("injected fault")
        return super().logits(seqs)


@contextmanager
def faulty_server(demo_tokenizer, rows: int):
    runner = FaultyRunner(demo_tokenizer, choose_script, num_rows=rows, max_len=SCRIPTED_CONTEXT)
    config = EngineConfig(max_running_requests=rows, max_queue=4, max_model_len=SCRIPTED_CONTEXT)
    engine = AsyncEngine(LLMEngine(runner, config, demo_tokenizer, DEFAULT_STOP_TOKEN_IDS))
    settings = ServerSettings(served_model_names=[SCRIPTED_NAME], max_model_len=SCRIPTED_CONTEXT,
                              sampling_defaults={"temperature": 0.0})
    try:
        with serving(engine, demo_tokenizer, settings) as server:
            yield server
    finally:
        runner.gate.set()


def _chat(content: str, **fields) -> dict:
    return {"model": SCRIPTED_NAME, "messages": [{"role": "user", "content": content}], "max_tokens": 100,
            "enable_thinking": False, **fields}


def _events(lines) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def _post_in_thread(url: str, body: dict, results: dict, key: str) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.update({key: httpx.post(url + CHAT, json=body, timeout=60)}))
    thread.start()
    return thread


def test_a_stream_queued_behind_a_failing_request_is_served_in_full(demo_path, demo_tokenizer):
    with faulty_server(demo_tokenizer, rows=1) as server:
        runner, engine, results = server.runner, server.engine, {}
        runner.gate.clear()  # the faulty request's first decode step waits in the runner
        faulty = _post_in_thread(server.url, _chat("[fault]"), results, "faulty")
        wait_for(lambda: engine.num_running == 1, what="faulty request running")
        with httpx.stream("POST", server.url + CHAT, json=_chat("Hi", stream=True), timeout=60) as stream:
            wait_for(lambda: engine.num_waiting == 1, what="stream queued behind it")
            runner.gate.set()
            events = _events(stream.iter_lines())
        faulty.join(30)
        error = results["faulty"].json()["error"]
        assert results["faulty"].status_code == 500 and error["code"] == "engine_error"
        assert "injected fault" in error["message"]
        assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1])
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
        assert text == "Hello from the script."
        assert httpx.get(server.url + "/health").status_code == 200
        wait_for(lambda: engine.num_running == 0 and engine.num_waiting == 0, what="books empty")


def test_a_stream_batched_with_a_failing_request_ends_with_an_error_event(demo_path, demo_tokenizer):
    with faulty_server(demo_tokenizer, rows=2) as server:
        runner, engine, results = server.runner, server.engine, {}
        runner.gate.clear()
        with httpx.stream("POST", server.url + CHAT, json=_chat("[long]", stream=True), timeout=60) as stream:
            lines, reader = [], stream.iter_lines()
            while len(_events(lines)) < 2:  # role chunk and first token; the next decode waits in the runner
                lines.append(next(reader))
            faulty = _post_in_thread(server.url, _chat("[fault]"), results, "faulty")
            wait_for(lambda: engine.num_waiting == 1, what="faulty request queued")
            runner.gate.set()  # the stream's step finishes; the next one holds both, and fails
            lines += list(reader)
        faulty.join(30)
        events = _events(lines)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "engine_error", events[-3:]
        assert results["faulty"].status_code == 500
        after = httpx.post(server.url + CHAT, json=_chat("Hi", max_tokens=20), timeout=60)
        assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "Hello from the script."
        wait_for(lambda: engine.num_running == 0 and engine.num_waiting == 0, what="books empty")
