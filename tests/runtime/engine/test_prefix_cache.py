"""Prefix caching: the books (content keys, references, LRU eviction, checkpoints) and exactness through the
engine: with caching on, greedy tokens and logprobs equal caching off for text, chunked prefill, n > 1,
MTP speculation and images, and eviction under a small pool never corrupts a running request."""
import numpy as np
import pytest
import torch
from PIL import Image

from engine_helpers import greedy
from qwen35.runtime.bench.agreement import guessing_mtp_head, spread_weights
from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.kv_pool import BlockManager
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.prefix_cache import PrefixCache, page_keys
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.tokenizer import load_tokenizer
from qwen35.runtime.vision import expand_prompt_ids, load_image_config, preprocess_images

PAGE = 4


def _keys(tokens, pages, seed=0):
    return page_keys(tokens, pages, PAGE, seed)


def test_a_published_prefix_is_found_up_to_its_checkpoint_and_only_for_the_same_tokens():
    cache = PrefixCache(BlockManager(8, PAGE), first_checkpoint_slot=2, num_checkpoints=2)
    tokens = list(range(100, 111))  # 11 tokens: checkpoint after 2 pages
    pages = cache.allocate(11)
    checkpoint = cache.new_checkpoint()
    assert checkpoint in (2, 3)
    cache.publish(tokens, _keys(tokens, 2), pages, checkpoint)
    hit = cache.match(tokens + [7], _keys(tokens + [7], 2))
    assert (hit.num_tokens, hit.pages, hit.checkpoint) == (8, tuple(pages[:2]), checkpoint)
    other = tokens[:5] + [999] + tokens[6:]  # differs in the second page: only the first is cached, no checkpoint
    assert cache.match(other, _keys(other, 2)).num_tokens == 0
    assert cache.match(tokens, _keys(tokens, 2, seed=5)).num_tokens == 0  # other media, same pad tokens
    # A key collision is a miss, never a wrong reuse: the entry keeps its tokens.
    forged = [0] * 8 + tokens[8:]
    assert cache.match(forged, _keys(tokens, 2)).num_tokens == 0


def test_cached_pages_outlive_their_sequences_until_an_allocation_needs_them():
    blocks = BlockManager(6, PAGE)
    cache = PrefixCache(blocks, first_checkpoint_slot=1, num_checkpoints=1)
    tokens = list(range(9))
    pages = cache.allocate(12)  # 3 pages: 2 published, 1 private
    cache.publish(tokens, _keys(tokens, 2), pages, cache.new_checkpoint())
    hit = cache.match(tokens, _keys(tokens, 2))  # a second holder
    cache.release(pages)
    assert blocks.num_free_pages == 4 and cache.num_available_pages == 4  # both cached pages still referenced
    cache.release(list(hit.pages))
    assert blocks.num_free_pages == 4 and cache.num_available_pages == 6 and cache.num_cached_pages == 2
    assert cache.match(tokens, _keys(tokens, 2)).num_tokens == 8  # still there while nobody needed the room
    cache.release(pages[:2])
    fresh = cache.allocate(24)  # every page: the cached ones are evicted (leaf first) and their checkpoint freed
    assert sorted(fresh) == list(range(6)) and cache.num_cached_pages == 0
    assert cache.match(tokens, _keys(tokens, 2)).num_tokens == 0
    assert cache.new_checkpoint() == 1


def test_the_least_recently_used_checkpoint_gives_way():
    cache = PrefixCache(BlockManager(16, PAGE), first_checkpoint_slot=4, num_checkpoints=2)
    prompts = [[seed] * 9 for seed in (1, 2, 3)]
    for index, tokens in enumerate(prompts):
        pages = cache.allocate(9)
        cache.publish(tokens, _keys(tokens, 2), pages, cache.new_checkpoint())
        cache.release(pages)
        if index == 1:
            cache.release(list(cache.match(prompts[0], _keys(prompts[0], 2)).pages))  # touch the first
    found = [cache.match(tokens, _keys(tokens, 2)).num_tokens for tokens in prompts]
    assert found == [8, 0, 8]  # the second's checkpoint went to the third


@pytest.fixture(scope="module")
def model(demo_path):
    model = load_model(demo_path, progress=False)
    spread_weights(model, seed=3)  # tokens that depend on the whole state, so a wrong restore shows
    return model


def _prompts(lengths, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 248000, (n,), generator=generator).tolist() for n in lengths]


def _run_in_turns(model, turns, steps, **settings):
    """Each turn's requests queued together after the previous turn ended; (tokens, logprobs, cached) per request."""
    config = EngineConfig(**{"max_model_len": 160, "page_size": PAGE, "prefill_chunk_size": 8,
                             "max_running_requests": 3, **settings})
    engine = LLMEngine(build_runner(model, config)[0], config)
    results = []
    for requests in turns:
        seqs = [seq for prompt, media, n in requests for seq in engine.add_request(prompt, [greedy(steps)] * n, media)]
        logprobs = {seq.seq_id: [] for seq in seqs}
        while engine.has_work:
            for seq, output in engine.step():
                assert output.finish_reason != "error", output.error
                logprobs[seq.seq_id] += [entry.logprob for entry in output.logprobs or []]
        results += [(seq.output_ids, logprobs[seq.seq_id], seq.num_cached_tokens) for seq in seqs]
    assert engine.scheduler.slots.num_free == config.max_running_requests
    assert engine.scheduler.num_available_pages == engine.runner.num_pages
    return results, engine


def _assert_same_as_uncached(cached, uncached):
    for (tokens, logprobs, _), (want_tokens, want_logprobs, hit) in zip(cached, uncached):
        assert hit == 0
        assert tokens == want_tokens
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(want_logprobs), rtol=0, atol=1e-4)


def test_repeated_prompts_and_chat_turns_reuse_the_cache_and_give_the_uncached_tokens(model):
    """Lengths that end mid-page and mid-chunk; a turn whose prompt extends the previous turn's."""
    first, other = _prompts((23, 38), seed=1)
    turns = [[(first, None, 1), (other, None, 1)],
             [(first, None, 1), (first + [5, 6, 7], None, 1), (other[:30], None, 1)],
             [(first + [5, 6, 7] + _prompts((14,), seed=2)[0], None, 1)]]
    cached, engine = _run_in_turns(model, turns, steps=5)
    uncached, _ = _run_in_turns(model, turns, steps=5, prefix_caching=False)
    _assert_same_as_uncached(cached, uncached)
    hits = [hit for _, _, hit in cached]
    # first: checkpoint after (23-1)//4 = 5 pages; first+3 resumes there and checkpoints after 6. other[:30]
    # holds 7 of other's cached pages, but other's only checkpoint is after 9: no state to resume from.
    assert hits == [0, 0, 20, 20, 0, 24]
    assert engine.scheduler.cached_prompt_tokens == sum(hits)


def test_n_choices_prefill_their_prompt_once(model):
    prompt = _prompts((37,), seed=4)[0]
    cached, engine = _run_in_turns(model, [[(prompt, None, 3)]], steps=4)
    uncached, _ = _run_in_turns(model, [[(prompt, None, 3)]], steps=4, prefix_caching=False)
    _assert_same_as_uncached(cached, uncached)
    assert [hit for _, _, hit in cached] == [0, 36, 36]
    assert engine.scheduler.computed_prompt_tokens == 37 + 2 * 1


def test_speculation_with_a_cached_prefix_gives_plain_greedy(demo_path):
    model = load_model(demo_path, progress=False)
    spread_weights(model, seed=2)
    guessing_mtp_head(model)
    prompt = _prompts((29,), seed=6)[0]
    turns = [[(prompt, None, 1)], [(prompt + [11, 12], None, 2)]]
    spec, engine = _run_in_turns(model, turns, steps=9, speculative_tokens=2)
    plain, _ = _run_in_turns(model, turns, steps=9, prefix_caching=False)
    assert [tokens for tokens, _, _ in spec] == [tokens for tokens, _, _ in plain]
    assert [hit for _, _, hit in spec][1:] == [28, 28] and engine.accepted_tokens > 0


def _image_request(tokenizer, path, seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    images = preprocess_images([image], load_image_config(path))
    content = [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]
    text = tokenizer.chat_template.render([{"role": "user", "content": content}], add_generation_prompt=True)
    ids = expand_prompt_ids(tokenizer.encode(text), image_grids=images.grids(), encode=tokenizer.encode).ids
    return ids, MediaInputs(images.pixel_values, images.grids())


def test_images_are_keyed_by_their_pixels(model, demo_path):
    tokenizer = load_tokenizer(demo_path)
    (ids, picture), (other_ids, other_picture) = (_image_request(tokenizer, demo_path, s) for s in (1, 2))
    assert ids == other_ids  # the same pads: only the pixels tell the prompts apart
    turns = [[(ids, picture, 1)], [(ids, picture, 1), (other_ids, other_picture, 1)]]
    cached, _ = _run_in_turns(model, turns, steps=4, prefill_chunk_size=32)
    uncached, _ = _run_in_turns(model, turns, steps=4, prefill_chunk_size=32, prefix_caching=False)
    _assert_same_as_uncached(cached, uncached)
    assert [hit for _, _, hit in cached] == [0, (len(ids) - 1) // PAGE * PAGE, 0]
    # The pictures matter to the model (so a wrong reuse would show in the logprobs compared above).
    assert max(abs(a - b) for a, b in zip(cached[2][1], cached[0][1])) > 1e-3


def test_eviction_under_a_small_pool_never_corrupts_a_running_request(model):
    """Pages for about two full requests, eight prompts over three shared prefixes in four turns: the cache
    is evicted and refilled between and during turns; every output is the uncached one."""
    bases = _prompts((21, 26, 17), seed=8)
    tails = _prompts((3, 9, 1, 6, 12, 2, 5, 7), seed=9)
    prompts = [bases[i % 3] + tail for i, tail in enumerate(tails)]
    turns = [[(p, None, 1) for p in prompts[i:i + 2]] for i in range(0, 8, 2)]
    settings = dict(memory_budget_bytes=None, max_running_requests=2, max_model_len=48, prefix_checkpoints=2)
    cached, engine = _run_in_turns(model, turns, steps=6, **settings)
    uncached, _ = _run_in_turns(model, turns, steps=6, prefix_caching=False, **settings)
    _assert_same_as_uncached(cached, uncached)
    assert any(hit for _, _, hit in cached), "some prompt should still find its prefix"
    assert engine.runner.num_pages < 8 * 48 // PAGE  # the pool cannot keep every prefix: eviction happened
