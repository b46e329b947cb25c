"""Prefix caching through the HTTP API: usage reports the cached prompt tokens, /metrics counts hits."""
import httpx
from openai import OpenAI

from server_harness import DEMO_NAME, metric


def test_a_repeated_long_prompt_reports_cached_tokens_and_metrics_count_them(demo_server):
    client = OpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=120)
    prompt = "The history of the lighthouse keepers of the northern coast, told in order. " * 6
    scrape = lambda: httpx.get(demo_server.url + "/metrics").text  # noqa: E731
    before = scrape()
    first = client.completions.create(model=DEMO_NAME, prompt=prompt, max_tokens=3, temperature=0)
    second = client.completions.create(model=DEMO_NAME, prompt=prompt, max_tokens=3, temperature=0)
    prompt_tokens = first.usage.prompt_tokens
    assert prompt_tokens > 32
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert prompt_tokens / 2 <= cached < prompt_tokens
    assert second.choices[0].text == first.choices[0].text
    after = scrape()
    assert metric(after, "qwen35_prefix_cache_hit_tokens_total") - metric(before, "qwen35_prefix_cache_hit_tokens_total") == cached
    computed = metric(after, "qwen35_prefix_cache_computed_tokens_total") - metric(before, "qwen35_prefix_cache_computed_tokens_total")
    assert computed == 2 * prompt_tokens - cached


def test_chat_usage_reports_cached_tokens_of_the_previous_turn(demo_server):
    client = OpenAI(base_url=demo_server.v1, api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "system", "content": "You answer questions about ships. " * 8},
                {"role": "user", "content": "Which ship is the oldest?"}]
    first = client.chat.completions.create(model=DEMO_NAME, messages=messages, max_tokens=2, temperature=0,
                                           extra_body={"enable_thinking": False})
    messages += [{"role": "assistant", "content": first.choices[0].message.content or "none"},
                 {"role": "user", "content": "And the newest?"}]
    second = client.chat.completions.create(model=DEMO_NAME, messages=messages, max_tokens=2, temperature=0,
                                            extra_body={"enable_thinking": False})
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens // 2
