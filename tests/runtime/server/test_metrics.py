"""The hand-written Prometheus exposition: well-formed lines, cumulative buckets, labels escaped."""
import re

from qwen35.runtime.server.metrics import Counter, Histogram, ServerMetrics

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def test_exposition_lines_are_well_formed():
    metrics = ServerMetrics(running=lambda: 3, waiting=lambda: 1, kv_cache_usage=lambda: 0.25)
    metrics.requests.inc("/v1/chat/completions", "200")
    metrics.requests.inc("/v1/chat/completions", "200")
    metrics.requests.inc("other", "404")
    metrics.on_prompt(12, 0)
    metrics.on_token(0.3, first=True)
    metrics.on_token(0.02, first=False)
    text = metrics.render()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or SAMPLE.match(line), line
    assert 'qwen35_requests_total{endpoint="/v1/chat/completions",status="200"} 2' in text
    assert "# TYPE qwen35_requests_total counter" in text
    assert "qwen35_prompt_tokens_total 12" in text and "qwen35_generation_tokens_total 2" in text
    assert "qwen35_running_requests 3" in text and "qwen35_waiting_requests 1" in text
    assert "qwen35_kv_cache_usage_ratio 0.25" in text and "# TYPE qwen35_kv_cache_usage_ratio gauge" in text
    assert "# TYPE qwen35_time_to_first_token_seconds histogram" in text
    assert "qwen35_time_to_first_token_seconds_count 1" in text
    assert "qwen35_inter_token_latency_seconds_sum 0.02" in text


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    histogram = Histogram("h", "help", (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.samples() == ['h_bucket{le="0.1"} 2', 'h_bucket{le="1"} 3', 'h_bucket{le="+Inf"} 4',
                                   "h_sum 3.65", "h_count 4"]


def test_label_values_are_escaped_and_unlabelled_counters_start_at_zero():
    counter = Counter("c", "help", ("path",))
    counter.inc('a"b\\c\nd')
    assert counter.samples() == ['c_total{path="a\\"b\\\\c\\nd"} 1']
    assert Counter("z", "help").samples() == ["z_total 0"]
