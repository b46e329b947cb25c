"""The server driven by the real `openai` client: chat, completions, streaming, reasoning, tools."""
import asyncio
import json

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from server_harness import (DEFAULT_SCRIPT, DEMO_NAME, SCRIPTED_NAME, TOOL_RESULT_ANSWER)

WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Forecast for a city.",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}}}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}},
]
EXPECTED_CALLS = [("get_weather", {"city": "Paris", "days": 3, "metric": True}),
                  ("get_time", {"zone": "Europe/Paris"})]


@pytest.fixture(scope="module")
def demo(demo_server):
    return OpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def scripted(scripted_server):
    return OpenAI(base_url=scripted_server.v1, api_key="unused", max_retries=0, timeout=120)


def test_health_and_models(demo_server, demo):
    assert httpx.get(demo_server.url + "/health").json() == {"status": "ok"}
    models = demo.models.list()
    assert [m.id for m in models.data] == [DEMO_NAME]
    assert models.data[0].max_model_len == 256


def test_chat_non_streaming_with_logprobs(demo):
    reply = demo.chat.completions.create(
        model=DEMO_NAME, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=5, temperature=0, logprobs=True, top_logprobs=3, extra_body={"enable_thinking": False})
    choice = reply.choices[0]
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == DEMO_NAME
    assert choice.finish_reason == "length" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.tool_calls is None
    assert reply.usage.completion_tokens == 5 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5
    entries = choice.logprobs.content
    assert len(entries) == 5
    for entry in entries:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        # Greedy: the chosen token is the most likely one.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token


def test_chat_streaming_equals_non_streaming_at_temperature_zero(demo):
    request = dict(model=DEMO_NAME, messages=[{"role": "user", "content": "Write a short poem about the sea."}],
                   max_tokens=6, temperature=0, extra_body={"enable_thinking": False})
    whole = demo.chat.completions.create(**request)
    chunks = list(demo.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_async_client_chat_and_completion_streaming(demo_server):
    async def main():
        client = AsyncOpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=120)
        chat = await client.chat.completions.create(
            model=DEMO_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0)
        pieces = []
        stream = await client.completions.create(model=DEMO_NAME, prompt="The demo model is", max_tokens=4,
                                                 temperature=0, stream=True)
        async for chunk in stream:
            pieces.append(chunk)
        whole = await client.completions.create(model=DEMO_NAME, prompt="The demo model is", max_tokens=4,
                                                temperature=0)
        await client.close()
        return chat, pieces, whole

    chat, pieces, whole = asyncio.run(main())
    assert chat.usage.completion_tokens == 3
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_completions_batch_token_prompts_n_and_logprobs(demo, demo_tokenizer):
    ids = demo_tokenizer.encode("Hello there")
    reply = demo.completions.create(model=DEMO_NAME, prompt=["Hello there", ids], max_tokens=4, temperature=0,
                                    n=2, logprobs=2, extra_body={"return_token_ids": True})
    assert reply.object == "text_completion" and len(reply.choices) == 4
    texts = [c.text for c in reply.choices]
    assert len(set(texts)) == 1, "the same prompt as text or as ids, greedy, gives one answer"
    for choice in reply.choices:
        assert choice.logprobs.tokens and len(choice.logprobs.token_logprobs) == 4
        assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
        assert choice.prompt_token_ids == ids and len(choice.token_ids) == 4
    assert reply.usage.prompt_tokens == 2 * len(ids) and reply.usage.completion_tokens == 16


def test_seeded_sampling_is_reproducible_and_choices_differ(demo):
    request = dict(model=DEMO_NAME, prompt="Numbers are split into single digits", max_tokens=6,
                   temperature=1.0, seed=7, n=2)
    first = demo.completions.create(**request, extra_body={"top_k": -1, "return_token_ids": True})
    again = demo.completions.create(**request, extra_body={"top_k": -1, "return_token_ids": True})
    assert [c.token_ids for c in first.choices] == [c.token_ids for c in again.choices]
    assert first.choices[0].token_ids != first.choices[1].token_ids


def _prompt_text(tokenizer, reply) -> str:
    return tokenizer.decode(reply.prompt_token_ids)


def test_reasoning_is_separated_when_thinking_is_on(scripted, demo_tokenizer):
    reply = scripted.chat.completions.create(
        model=SCRIPTED_NAME, messages=[{"role": "user", "content": "[reason] What is 2 + 2?"}],
        extra_body={"chat_template_kwargs": {"enable_thinking": True}, "return_token_ids": True})
    message = reply.choices[0].message
    assert _prompt_text(demo_tokenizer, reply).endswith("<|im_start|>assistant\n<think>\n")
    assert message.reasoning_content == "The user wants a number. Two plus two is four."
    assert message.content == "The answer is 4." and reply.choices[0].finish_reason == "stop"

    chunks = list(scripted.chat.completions.create(
        model=SCRIPTED_NAME, messages=[{"role": "user", "content": "[reason] What is 2 + 2?"}], stream=True,
        extra_body={"enable_thinking": True}))
    deltas = [c.choices[0].delta for c in chunks]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert (reasoning, content) == (message.reasoning_content, message.content)
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not getattr(d, "reasoning_content", None) for d in deltas[first_content:])


def test_thinking_off_gives_content_only(scripted, demo_tokenizer):
    for extra in ({"enable_thinking": False}, {"chat_template_kwargs": {"enable_thinking": False}}):
        reply = scripted.chat.completions.create(
            model=SCRIPTED_NAME, messages=[{"role": "user", "content": "Say hello"}],
            extra_body={**extra, "return_token_ids": True})
        assert _prompt_text(demo_tokenizer, reply).endswith("<think>\n\n</think>\n\n")
        message = reply.choices[0].message
        assert message.content == DEFAULT_SCRIPT and message.reasoning_content is None


def test_tool_call_round_trip(scripted, demo_tokenizer):
    messages = [{"role": "user", "content": "[tools] What is the weather in Paris?"}]
    reply = scripted.chat.completions.create(model=SCRIPTED_NAME, messages=messages, tools=WEATHER_TOOLS,
                                             extra_body={"enable_thinking": False})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content.strip() == "I will look that up."
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == EXPECTED_CALLS
    assert all(c.type == "function" and c.id.startswith("call_") for c in calls)
    assert len({c.id for c in calls}) == 2

    messages.append(choice.message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": calls[0].id, "content": '{"forecast": "sunny"}'},
                 {"role": "tool", "tool_call_id": calls[1].id, "content": "14:00"}]
    answer = scripted.chat.completions.create(model=SCRIPTED_NAME, messages=messages, tools=WEATHER_TOOLS,
                                              extra_body={"enable_thinking": False, "return_token_ids": True})
    assert answer.choices[0].message.content == TOOL_RESULT_ANSWER
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.tool_calls is None
    prompt = _prompt_text(demo_tokenizer, answer)
    assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n" in prompt
    assert '<tool_response>\n{"forecast": "sunny"}\n</tool_response>' in prompt


def _stream_calls(client, **request):
    calls, content, finishes = {}, "", []
    for chunk in client.chat.completions.create(model=SCRIPTED_NAME, stream=True, **request):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    assert call["id"] is None and delta.function.name, "id and name come first, once"
                    call["id"], call["name"] = delta.id, delta.function.name
                else:
                    assert call["name"] is not None, "arguments never come before the name"
                call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)], content, finishes


def test_streamed_tool_call_deltas_reassemble_into_json(scripted):
    calls, content, finishes = _stream_calls(
        scripted, messages=[{"role": "user", "content": "[tools] Weather?"}], tools=WEATHER_TOOLS,
        extra_body={"enable_thinking": False})
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == EXPECTED_CALLS
    assert content.strip() == "I will look that up." and finishes == ["tool_calls"]

    calls, _, _ = _stream_calls(scripted, messages=[{"role": "user", "content": "[tools] Weather?"}],
                                tools=WEATHER_TOOLS, parallel_tool_calls=False)
    assert [c["name"] for c in calls] == ["get_weather"]


def test_tool_choice_named_required_and_none(scripted):
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in (named, "required"):
        reply = scripted.chat.completions.create(
            model=SCRIPTED_NAME, messages=[{"role": "user", "content": "[oslo] Weather in Oslo?"}], tools=WEATHER_TOOLS,
            tool_choice=choice)
        (call,) = reply.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
        assert reply.choices[0].finish_reason == "tool_calls"
        calls, _, _ = _stream_calls(scripted, messages=[{"role": "user", "content": "[oslo] Weather in Oslo?"}],
                                    tools=WEATHER_TOOLS, tool_choice=choice)
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Oslo"})]

    reply = scripted.chat.completions.create(
        model=SCRIPTED_NAME, messages=[{"role": "user", "content": "[tools] Weather?"}], tools=WEATHER_TOOLS,
        tool_choice="none", extra_body={"enable_thinking": False})
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason == "stop"
    assert "<tool_call>" in reply.choices[0].message.content


def test_stop_strings_and_max_tokens(scripted):
    reply = scripted.chat.completions.create(model=SCRIPTED_NAME, messages=[{"role": "user", "content": "Hi"}],
                                             stop=["script"], extra_body={"enable_thinking": False})
    assert reply.choices[0].message.content == "Hello from the "
    assert reply.choices[0].finish_reason == "stop"
    reply = scripted.chat.completions.create(model=SCRIPTED_NAME, messages=[{"role": "user", "content": "[long]"}],
                                             max_completion_tokens=5, extra_body={"enable_thinking": False})
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
    assert "word word word".startswith(reply.choices[0].message.content.strip())
