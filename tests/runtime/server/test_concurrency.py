"""Many clients at once: batched streams equal solo runs, disconnects free rows, full queues say 503."""
import asyncio
import json

import httpx
from openai import AsyncOpenAI, OpenAI

from server_harness import API_KEY, DEMO_NAME, SCRIPTED_NAME, metric, wait_for

PROMPTS = [f"Question {i}: what is the weather in city number {i * 7}?" + " Please answer." * (i % 3)
           for i in range(8)]
COPIES = 4
LONGEST = 7


def _request(prompt: str, max_tokens: int) -> dict:
    # Raw completions: the random demo weights answer every chat prompt with newlines, but
    # raw prompts get varied continuations, which makes the comparison meaningful.
    return dict(model=DEMO_NAME, prompt=prompt, max_tokens=max_tokens, temperature=0,
                extra_body={"return_token_ids": True})


def test_32_concurrent_streams_complete_and_equal_solo_runs(demo_server):
    """Greedy output is the same batched as alone (shorter max_tokens give prefixes of it)."""
    client = OpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=120)
    solo = {}
    for prompt in PROMPTS:
        reply = client.completions.create(**_request(prompt, LONGEST))
        solo[prompt] = (reply.choices[0].token_ids, reply.choices[0].text)
    steps_before = demo_server.engine.engine.steps

    async def stream(client, prompt, max_tokens):
        tokens, text, finishes = [], "", []
        async for chunk in await client.completions.create(**_request(prompt, max_tokens), stream=True):
            for choice in chunk.choices:
                tokens += getattr(choice, "token_ids", None) or []
                text += choice.text
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
        return prompt, max_tokens, tokens, text, finishes

    async def main():
        client = AsyncOpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=120)
        jobs = [stream(client, prompt, LONGEST - copy) for prompt in PROMPTS for copy in range(COPIES)]
        results = await asyncio.gather(*jobs)
        await client.close()
        return results

    results = asyncio.run(main())
    assert len(results) == 32
    assert len({tuple(tokens) for tokens, _ in solo.values()}) >= 3, "solo outputs should differ by prompt"
    for prompt, max_tokens, tokens, text, finishes in results:
        solo_tokens, solo_text = solo[prompt]
        assert tokens == solo_tokens[:max_tokens], (prompt, max_tokens)
        assert finishes == ["length"]
        if max_tokens == LONGEST:
            assert text == solo_text
    # Run one after another these would take 32 * 7 steps; batched they share steps.
    assert demo_server.engine.engine.steps - steps_before < 4 * LONGEST
    assert demo_server.engine.num_running == 0 and demo_server.engine.num_waiting == 0


def _delta_text(line: str) -> str:
    """The content of a streamed chat chunk ('' for the role chunk and for a chunk without choices)."""
    choices = json.loads(line.removeprefix("data: "))["choices"]
    return (choices[0]["delta"].get("content") or "") if choices else ""


def test_client_disconnect_mid_stream_frees_its_row(scripted_server):
    """The decode step is held while the client goes away, so the sequence is surely still running."""
    runner, engine = scripted_server.runner, scripted_server.engine
    scrape = lambda: httpx.get(scripted_server.url + "/metrics").text  # noqa: E731
    before = scrape()
    aborted_before = metric(before, "qwen35_aborted_requests_total")
    generated_before = metric(before, "qwen35_generation_tokens_total")
    body = {"model": SCRIPTED_NAME, "messages": [{"role": "user", "content": "[long]"}],
            "max_tokens": 150, "stream": True, "enable_thinking": False}
    runner.gate.clear()  # the prompt's first token comes through; the first decode step blocks inside the runner
    try:
        with httpx.Client(base_url=scripted_server.url, timeout=60) as client:
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    # The role chunk (empty content) goes out before the engine schedules the sequence.
                    if line.startswith("data: {") and _delta_text(line):
                        break
                assert engine.num_running == 1
        # The connection is closed mid-stream: the server must notice and abort the sequence.
        wait_for(lambda: all(seq.aborted for seq in engine.engine.scheduler.running), what="abort after disconnect")
    finally:
        runner.gate.set()
    wait_for(lambda: metric(scrape(), "qwen35_running_requests") == 0, what="row freed after disconnect")
    after = scrape()
    assert metric(after, "qwen35_aborted_requests_total") == aborted_before + 1
    assert metric(after, "qwen35_generation_tokens_total") - generated_before < 150
    assert engine.num_running == 0


def test_full_queue_gets_503_and_timeouts_free_everything(tight_server):
    """One row and one queue place: a third request is refused at once while the model is busy."""
    runner, engine = tight_server.runner, tight_server.engine
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": SCRIPTED_NAME, "messages": [{"role": "user", "content": "[long]"}], "max_tokens": 150,
            "enable_thinking": False}

    async def main():
        async with httpx.AsyncClient(base_url=tight_server.url, headers=headers, timeout=60) as client:
            runner.gate.clear()  # the next decode step blocks inside the model worker
            try:
                first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
                second = asyncio.create_task(client.post("/v1/chat/completions", json=body))
                deadline = asyncio.get_running_loop().time() + 30
                while not (engine.num_running == 1 and engine.num_waiting == 1):
                    assert asyncio.get_running_loop().time() < deadline, "requests were not queued"
                    await asyncio.sleep(0.005)
                refused = await client.post("/v1/chat/completions", json=body)
                health = await client.get("/health")
                timed_out = await asyncio.gather(first, second)
            finally:
                runner.gate.set()
            return refused, health, timed_out

    refused, health, timed_out = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    assert health.status_code == 200, "the event loop answers while the model step is blocked"
    for response in timed_out:
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    wait_for(lambda: engine.num_running == 0 and engine.num_waiting == 0, what="aborted requests retired")
    reply = httpx.post(tight_server.url + "/v1/chat/completions", headers=headers, timeout=60,
                       json={**body, "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == 200 and json.loads(reply.text)["choices"][0]["message"]["content"]


def test_a_stream_past_its_deadline_ends_with_a_timeout_error(tight_server):
    runner = tight_server.runner
    body = {"model": SCRIPTED_NAME, "messages": [{"role": "user", "content": "[long]"}], "max_tokens": 150,
            "stream": True, "enable_thinking": False}
    events = []
    runner.gate.clear()
    try:
        with httpx.Client(base_url=tight_server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=60) as client:
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    finally:
        runner.gate.set()
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "timeout"
    wait_for(lambda: tight_server.engine.num_running == 0, what="timed-out stream retired")


def test_a_non_streaming_client_that_gives_up_frees_its_row(demo_server):
    scrape = lambda: httpx.get(demo_server.url + "/metrics").text  # noqa: E731
    aborted_before = metric(scrape(), "qwen35_aborted_requests_total")
    body = {"model": DEMO_NAME, "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0}
    with httpx.Client(base_url=demo_server.url) as client:
        try:
            client.post("/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
            raise AssertionError("200 tokens should take longer than the client waits")
        except httpx.ReadTimeout:
            pass  # httpx closes the connection: the server sees the disconnect
    wait_for(lambda: metric(scrape(), "qwen35_aborted_requests_total") == aborted_before + 1,
             what="non-streaming request aborted after disconnect")
    wait_for(lambda: demo_server.engine.num_running == 0, what="row freed")
    assert 'endpoint="/v1/completions",status="499"' in scrape()
