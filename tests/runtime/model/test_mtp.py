"""The MTP head over the paged cache, the verify/commit of Gated DeltaNet state, and greedy speculation
through the engine on tiny transformers checkpoints with MTP tensors."""
import copy

import pytest
import torch

from qwen35.runtime.engine.config import EngineConfig
from qwen35.runtime.engine.llm_engine import LLMEngine
from qwen35.runtime.engine.runner import build_runner
from qwen35.runtime.engine.sampling import SamplingParams
from qwen35.runtime.kernels import select_kernels
from qwen35.runtime.model.batch import Mode, decode_batch, packed_batch
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.loader import load_model
from qwen35_tiny_checkpoints import VOCAB, add_mtp, read_config, read_tensors, write_checkpoint

PAGE = 4
KERNELS = select_kernels("cpu")


@pytest.fixture(scope="module")
def mtp_models(hf_checkpoints, tmp_path_factory):
    """variant -> our model loaded from the tiny transformers checkpoint plus random mtp.* tensors."""
    loaded = {}

    def get(variant: str):
        if variant not in loaded:
            path, _ = hf_checkpoints(variant)
            tensors, config = read_tensors(path), read_config(path)
            add_mtp(tensors, config)
            directory = write_checkpoint(tmp_path_factory.mktemp(f"mtp_{variant}"), tensors, config)
            loaded[variant] = load_model(directory, progress=False).eval()
        return loaded[variant]

    return get


def _cache(model, slots: int, pages_per_slot: int, mtp: bool = False) -> tuple[ModelCache, torch.Tensor]:
    """A cache with each slot's pages contiguous, and those block tables [slots, pages_per_slot]."""
    cache = ModelCache(model.config.text, slots, slots * pages_per_slot, PAGE, torch.float32, "cpu",
                       mtp_layers=1 if mtp else 0)
    return cache, torch.arange(slots * pages_per_slot, dtype=torch.int32).view(slots, pages_per_slot)


def _packed(mode, tokens: torch.Tensor, lengths, cached, slots, tables, positions=None):
    slot_ids = torch.tensor(slots, dtype=torch.int32)
    return packed_batch(mode, tokens, lengths, cached, slot_ids, tables[slot_ids.long()], PAGE, positions)


def test_the_head_over_cached_chunks_equals_one_pass(mtp_models):
    """The head fed a sequence in chunks over its pages (as speculation feeds it) equals one causal pass."""
    model = mtp_models("dense_tied")
    ids = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        hidden = model.prompt_hidden(ids[None])[0]
        next_ids = torch.roll(ids, -1)
        embeds = model.language_model.embed_tokens(next_ids)
        cache, tables = _cache(model, 1, 4, mtp=True)
        whole = model.mtp(embeds, hidden, _packed(Mode.PREFILL, next_ids, [9], [0], [0], tables), cache, KERNELS)
        cache, tables = _cache(model, 1, 4, mtp=True)
        parts = [model.mtp(embeds[a:b], hidden[a:b], _packed(Mode.PREFILL, next_ids[a:b], [b - a], [a], [0], tables),
                           cache, KERNELS) for a, b in ((0, 4), (4, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["dense_untied", "moe_tied"])
def test_rejected_drafts_leave_the_state_of_plain_decoding_of_the_accepted_tokens(mtp_models, variant):
    """After a verify over 4 tokens keeping 1 and 3 of them, conv and recurrent state and the next
    logits are those of decoding only the kept tokens; keeping all 4 would differ."""
    model = mtp_models(variant)
    text, language = model.config.text, model.language_model
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen) for n in (5, 8)]
    verified = torch.randint(0, VOCAB, (2, 4), generator=gen)
    accepted = torch.tensor([1, 3])
    with torch.inference_mode():
        cache, tables = _cache(model, 2, 8)
        language(_packed(Mode.PREFILL, torch.cat(prompts), [5, 8], [0, 0], [0, 1], tables), cache, KERNELS)
        plain, everything = copy.deepcopy(cache), copy.deepcopy(cache)
        full = language(_packed(Mode.PREFILL, verified.reshape(-1), [4, 4], [5, 8], [0, 1], tables), everything,
                        KERNELS)
        verify = _packed(Mode.VERIFY, verified.reshape(-1), [4, 4], [5, 8], [0, 1], tables)
        hidden = language(verify, cache, KERNELS)
        torch.testing.assert_close(hidden, full, rtol=1e-4, atol=1e-4)
        language.commit(verify, accepted, cache, KERNELS)
        for row, keep in enumerate(accepted.tolist()):
            for t in range(keep):
                position = torch.tensor([(5, 8)[row] + t])
                step = decode_batch(verified[row, t:t + 1], position, position, torch.tensor([row], dtype=torch.int32),
                                    tables[row:row + 1], PAGE)
                language(step, plain, KERNELS)
        for layer in text.linear_attention_layer_ids:
            for store in ("conv", "recurrent"):
                got, want = getattr(cache, store)[layer], getattr(plain, store)[layer]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
                assert (got - getattr(everything, store)[layer]).abs().max() > 1e-3, "rollback is not exercised"
        following = torch.randint(0, VOCAB, (2,), generator=gen)
        positions = torch.tensor([5 + 1, 8 + 3])

        def next_step(state):
            return language(decode_batch(following, positions, positions, torch.tensor([0, 1], dtype=torch.int32),
                                         tables, PAGE), state, KERNELS)

        torch.testing.assert_close(next_step(cache), next_step(plain), rtol=1e-4, atol=1e-4)


def _greedy_outputs(model, prompts, params, k):
    """Token ids per prompt through the engine (prefill in chunks of 3), speculating k drafts (0: off)."""
    config = EngineConfig(max_running_requests=4, max_model_len=64, prefill_chunk_size=3, speculative_tokens=k)
    engine = LLMEngine(build_runner(model, config)[0], config)
    seqs = [engine.add_request(prompt, [p])[0] for prompt, p in zip(prompts, params)]
    while engine.has_work:
        for _, output in engine.step():
            assert output.finish_reason != "error", output.error
    return [seq.output_ids for seq in seqs], engine


@pytest.mark.parametrize("variant", ["dense_tied", "moe_untied"])
def test_greedy_speculation_equals_plain_greedy_on_a_tiny_checkpoint(mtp_models, variant):
    """Prompts of different lengths, with and without penalties, k = 1 and 3: token for token."""
    model = mtp_models(variant)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (1, 4, 7, 11)]
    common = dict(temperature=0, max_tokens=14, ignore_eos=True)
    params = [SamplingParams(**common), SamplingParams(**common, presence_penalty=1.5),
              SamplingParams(**common, repetition_penalty=1.3, frequency_penalty=0.5), SamplingParams(**common)]
    want, _ = _greedy_outputs(model, prompts, params, 0)
    for k in (1, 3):
        got, engine = _greedy_outputs(model, prompts, params, k)
        assert got == want, k
        assert engine.draft_tokens > 0
