"""The MTP head's draft KV cache, the deferred-state verify forward, and greedy speculation on a
tiny transformers checkpoint with MTP tensors."""
import copy

import pytest
import torch

from qwen35.runtime.engine.runner import TorchModelRunner
from qwen35.runtime.engine.sampling import SamplingBatch, SamplingParams, TokenHistory, sample
from qwen35.runtime.engine.speculative import SpeculativeRunner
from qwen35.runtime.model.loader import load_model
from qwen35.runtime.model.verify import commit_accepted, verify_forward
from qwen35_tiny_checkpoints import VOCAB, add_mtp, read_config, read_tensors, write_checkpoint


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


def test_draft_cache_chunks_match_one_uncached_pass(mtp_models):
    """The head over a sequence in cached chunks (as speculation feeds it) equals one causal pass."""
    model = mtp_models("dense_tied")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 9), generator=gen)
    with torch.inference_mode():
        hidden = model.language_model(ids)
        embeds = model.language_model.embed_tokens(torch.roll(ids, -1, dims=1))
        whole = model.mtp(embeds, hidden, torch.arange(9).expand(2, -1))
        cache = model.mtp.new_cache(2, 16)
        parts = []
        for start, end in ((0, 4), (4, 5), (5, 9)):
            step = cache.begin(None, end - start)
            parts.append(model.mtp(embeds[:, start:end], hidden[:, start:end], cache=cache, step=step))
            cache.commit(step)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-4, atol=1e-5)
    assert cache.lengths == [9, 9] and not cache.conv and not cache.recurrent
    assert set(cache.key) == {model.config.text.num_hidden_layers}


def _clone(cache):
    twin = copy.copy(cache)
    twin.lengths = list(cache.lengths)
    twin.rope_deltas = list(cache.rope_deltas)
    for name in ("key", "value", "conv", "recurrent"):
        setattr(twin, name, {layer: t.clone() for layer, t in getattr(cache, name).items()})
    return twin


@pytest.mark.parametrize("variant", ["dense_untied", "moe_tied"])
def test_rejected_drafts_leave_the_state_of_plain_decoding_of_the_accepted_tokens(mtp_models, variant):
    """After a verify over 4 tokens keeping 1 and 3 of them, conv and recurrent state, lengths and the
    next logits are those of decoding only the kept tokens; keeping all 4 would differ."""
    model = mtp_models(variant)
    text = model.config.text
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, VOCAB, (1, n), generator=gen) for n in (5, 8)]
    verified = torch.randint(0, VOCAB, (2, 4), generator=gen)
    accepted = torch.tensor([1, 3])
    with torch.inference_mode():
        cache = model.new_cache(2, 32)
        for row, prompt in enumerate(prompts):
            model(prompt, cache, rows=[row])
        before = _clone(cache)
        everything = _clone(cache)
        full_logits = model(verified, everything)
        out = verify_forward(model, cache, [0, 1], verified)
        torch.testing.assert_close(out.logits, full_logits, rtol=1e-4, atol=1e-4)
        commit_accepted(cache, out, accepted)

        plain = _clone(before)
        for row, keep in enumerate(accepted.tolist()):
            for t in range(keep):
                model(verified[row:row + 1, t:t + 1], plain, rows=[row])
        assert cache.lengths == plain.lengths == [5 + 1, 8 + 3]
        for layer in text.linear_attention_layer_ids:
            for store in ("conv", "recurrent"):
                got, want = getattr(cache, store)[layer], getattr(plain, store)[layer]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
                assert (got - getattr(everything, store)[layer]).abs().max() > 1e-3, "rollback is not exercised"
        following = torch.randint(0, VOCAB, (2, 1), generator=gen)
        torch.testing.assert_close(model(following, cache), model(following, plain), rtol=1e-4, atol=1e-4)


def _greedy_outputs(runner, prompts, params, max_tokens, speculative):
    """Token ids per prompt from a runner driven like the engine (prefill in chunks of 3)."""
    rows = list(range(len(prompts)))
    history = TokenHistory(len(prompts), runner.vocab_size)
    outputs = []
    for row, prompt in enumerate(prompts):
        runner.reset_row(row)
        history.start(row, prompt)
        for start in range(0, len(prompt), 3):
            logits = runner.prefill(row, prompt[start:start + 3])
        batch = SamplingBatch.from_params([params[row]], [0])
        first = int(sample(logits[None], batch, history, torch.tensor([row])).token_ids[0])
        outputs.append([first])
        history.append(torch.tensor([row]), torch.tensor([first]))
    while min(len(o) for o in outputs) < max_tokens:
        slots = torch.tensor(rows)
        batch = SamplingBatch.from_params(params, [len(o) for o in outputs])
        if speculative:
            step = runner.speculate(rows, [o[-1] for o in outputs], batch, history, slots)
            new = step.token_ids
        else:
            logits = runner.decode(rows, [o[-1] for o in outputs])
            new = [[t] for t in sample(logits, batch, history, slots).token_ids.tolist()]
        for row, tokens in enumerate(new):
            outputs[row] += tokens
            history.append(torch.full((len(tokens),), row), torch.tensor(tokens))
    return [o[:max_tokens] for o in outputs]


@pytest.mark.parametrize("variant", ["dense_tied", "moe_untied"])
def test_greedy_speculation_equals_plain_greedy_on_a_tiny_checkpoint(mtp_models, variant):
    """Prompts of different lengths, with and without penalties, k = 1 and 3: token for token."""
    model = mtp_models(variant)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (1, 4, 7, 11)]
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0, presence_penalty=1.5),
              SamplingParams(temperature=0, repetition_penalty=1.3, frequency_penalty=0.5),
              SamplingParams(temperature=0)]
    with torch.inference_mode():
        want = _greedy_outputs(TorchModelRunner(model, 4, 64), prompts, params, 14, speculative=False)
        for k in (1, 3):
            runner = SpeculativeRunner(model, 4, 64, k)
            assert _greedy_outputs(runner, prompts, params, 14, speculative=True) == want, k
