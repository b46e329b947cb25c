"""Per-request sampling parameters and the batched sampler over a [B, V] logits tensor.

Order of operations (vLLM's, with the filters in the order SGLang applies them):
logit_bias (added to the logits, OpenAI's semantics) -> penalties (repetition, frequency,
presence) -> greedy argmax for temperature ~0 rows ->
temperature -> top_k -> top_p (on the top_k-renormalised distribution) -> min_p (relative to
the most likely token) -> exponential-race sampling. vLLM applies min_p before top_k/top_p;
the two orders differ only in which mass top_p sees.

Returned logprobs are "raw", as vLLM's default `logprobs_mode`: log_softmax of the logits as
they came from the model, before penalties, temperature and filtering.

Seeding: a seeded row draws its noise from a counter-based hash of (seed, step, token id), so
its tokens depend only on its own logits, seed and step index: not on the batch it shares, on
what ran before, or on a replay after preemption. Unseeded rows draw from one torch.Generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from qwen35.runtime.engine.grammar.constraints import Constraint

GREEDY_TEMPERATURE = 1e-5  # at or below this a row is sampled greedily (vLLM's epsilon)
MAX_LOGPROBS = 20  # OpenAI's top_logprobs limit
MAX_N = 128  # OpenAI's limit on choices per request
MAX_TOP_K = (1 << 31) - 1  # far above any vocabulary; keeps the int64 "off" sentinel above every value
MAX_LOGIT_BIAS = 100.0  # OpenAI's range for a bias value: -100 bans a token, 100 all but forces it
MAX_LOGIT_BIAS_ENTRIES = 1024
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)  # a signed 64-bit integer, as OpenAI's API documents
_TOP_K_OFF = 1 << 62
_MASK31 = (1 << 31) - 1
_MIX_MUL_1 = 0x4F1BBCDD  # odd multipliers below 2**31: x * c stays below 2**62 in int64
_MIX_MUL_2 = 0x2C1B3C6D
_STEP_SALT = 0x1B873593
_INDEX_SALT = 0x5BD1E995 & _MASK31


@dataclass
class SamplingParams:
    """What one request asks of the sampler and of the output stream."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # top-N alternatives to return; 0: only the chosen token's
    n: int = 1
    constraint: Constraint | None = None  # a grammar the output must follow (json schema, regex, tool calls)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit

    @property
    def greedy(self) -> bool:
        """Whether this request takes the argmax instead of sampling."""
        return self.temperature <= GREEDY_TEMPERATURE

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that is out of range."""
        _check(0.0 <= self.temperature <= 2.0, "temperature", "must be in [0, 2]", self.temperature)
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]", self.top_p)
        _check(_is_int(self.top_k) and -1 <= self.top_k <= MAX_TOP_K, "top_k",
               f"must be an integer in [1, {MAX_TOP_K}], or 0 / -1 for off", self.top_k)
        _check(0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]", self.min_p)
        _check(-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be in [-2, 2]",
               self.presence_penalty)
        _check(-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be in [-2, 2]",
               self.frequency_penalty)
        # Capped at 2: beyond that a positive logit loses more than half of itself, which
        # already bans repeats; larger values are almost always a units mistake.
        _check(0.0 < self.repetition_penalty <= 2.0, "repetition_penalty",
               "must be in (0, 2] (1 = off)", self.repetition_penalty)
        _check(self.seed is None or (_is_int(self.seed) and SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]),
               "seed", "must be a 64-bit signed integer or null", self.seed)
        _check(_is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens",
               "must be an integer >= 1", self.max_tokens)
        _check(isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
               "stop", "must be a list of non-empty strings", self.stop)
        _check(isinstance(self.stop_token_ids, list)
               and all(_is_int(t) and t >= 0 for t in self.stop_token_ids),
               "stop_token_ids", "must be a list of token ids >= 0", self.stop_token_ids)
        _check(self.logprobs is None or (_is_int(self.logprobs)
                                         and 0 <= self.logprobs <= MAX_LOGPROBS),
               "logprobs", f"must be an integer in [0, {MAX_LOGPROBS}] or null", self.logprobs)
        _check(_is_int(self.n) and 1 <= self.n <= MAX_N, "n", f"must be an integer in [1, {MAX_N}]",
               self.n)
        bias = self.logit_bias
        _check(isinstance(bias, dict) and len(bias) <= MAX_LOGIT_BIAS_ENTRIES
               and all(_is_int(t) and 0 <= t < (1 << 31) for t in bias)
               and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and -MAX_LOGIT_BIAS <= v <= MAX_LOGIT_BIAS for v in bias.values()),
               "logit_bias", f"must map at most {MAX_LOGIT_BIAS_ENTRIES} token ids >= 0 to numbers in "
               f"[-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}]", bias)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, allowed: str, value) -> None:
    if not ok:
        big = isinstance(value, int) and value.bit_length() > 64
        shown = f"an integer of {value.bit_length()} bits" if big else repr(value)
        raise ValueError(f"{name}: {allowed}, got {shown if len(shown) <= 80 else shown[:77] + '...'}")


@dataclass
class SamplingBatch:
    """Per-row sampling settings as device tensors, built once per batch composition."""

    temperature: torch.Tensor  # [B] float32, 1.0 on greedy rows so dividing is harmless
    greedy: torch.Tensor  # [B] bool
    top_k: torch.Tensor  # [B] int64, a huge value where off
    top_p: torch.Tensor  # [B] float32
    min_p: torch.Tensor  # [B] float32
    presence_penalty: torch.Tensor  # [B] float32
    frequency_penalty: torch.Tensor  # [B] float32
    repetition_penalty: torch.Tensor  # [B] float32
    seeded_rows: torch.Tensor  # [S] int64, rows that carry a seed
    seed_lo: torch.Tensor  # [S] int64, low 31 bits of the seed
    seed_hi: torch.Tensor  # [S] int64, next 31 bits
    steps: torch.Tensor  # [B] int64, tokens generated so far per row (the noise counter)
    all_greedy: bool
    needs_penalties: bool
    needs_filter: bool
    max_logprobs: int | None  # widest top-N asked for; None when no row wants logprobs
    max_top_k: int | None = None  # widest top_k when every row sets one (host-side, no sync)
    logit_bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # rows, token ids, values [N]

    @classmethod
    def from_params(cls, params: Sequence[SamplingParams], steps: Sequence[int] | None = None,
                    device: torch.device | str = "cpu") -> SamplingBatch:
        """Gather a batch's SamplingParams (and per-row step indices) into tensors."""
        rows = len(params)
        greedy = [p.greedy for p in params]
        top_k = [p.top_k if p.top_k > 0 else _TOP_K_OFF for p in params]
        seeded = [i for i, p in enumerate(params) if p.seed is not None]
        seeds = [params[i].seed % (1 << 62) for i in seeded]
        wanted = [p.logprobs for p in params if p.logprobs is not None]
        random_rows = [p for p in params if not p.greedy]
        # Three host tensors, three copies to the device (not one per field): on a GPU each copy
        # costs microseconds of launch and staging, and a decode step has ~1 ms in all.
        floats = torch.tensor([[1.0 if g else p.temperature for g, p in zip(greedy, params)],
                               [p.top_p for p in params], [p.min_p for p in params],
                               [p.presence_penalty for p in params], [p.frequency_penalty for p in params],
                               [p.repetition_penalty for p in params], [float(g) for g in greedy]],
                              dtype=torch.float32).to(device)
        ints = torch.tensor([top_k, list(steps) if steps is not None else [0] * rows], dtype=torch.int64).to(device)
        seeding = torch.tensor([seeded, [s & _MASK31 for s in seeds], [s >> 31 for s in seeds]],
                               dtype=torch.int64).to(device)
        max_top_k = max(top_k) if rows and all(p.top_k > 0 for p in params) else None
        biased = [(row, token, value) for row, p in enumerate(params) for token, value in p.logit_bias.items()]
        logit_bias = None
        if biased:
            bias_rows, bias_ids, bias_values = zip(*biased)
            where = torch.tensor([bias_rows, bias_ids], dtype=torch.int64).to(device)
            logit_bias = (where[0], where[1], torch.tensor(bias_values, dtype=torch.float32).to(device))
        return cls(
            max_top_k=max_top_k,
            logit_bias=logit_bias,
            temperature=floats[0],
            greedy=floats[6].bool(),
            top_k=ints[0],
            top_p=floats[1],
            min_p=floats[2],
            presence_penalty=floats[3],
            frequency_penalty=floats[4],
            repetition_penalty=floats[5],
            seeded_rows=seeding[0],
            seed_lo=seeding[1],
            seed_hi=seeding[2],
            steps=ints[1],
            all_greedy=all(greedy),
            needs_penalties=any(p.presence_penalty != 0 or p.frequency_penalty != 0
                                or p.repetition_penalty != 1 for p in params),
            needs_filter=any(p.top_k > 0 or p.top_p < 1 or p.min_p > 0 for p in random_rows),
            max_logprobs=max(wanted) if wanted else None,
        )

    def advance(self) -> None:
        """Move every row's step counter on by one token, in place."""
        self.steps += 1


class TokenHistory:
    """Per-slot generated-token counts and prompt-token masks, updated in place each step.

    Rows are engine slots, not batch positions: a request keeps its row for its lifetime, so
    nothing is rebuilt when the batch changes. Memory is num_slots * V * 5 bytes.
    """

    def __init__(self, num_slots: int, vocab_size: int, device: torch.device | str = "cpu"):
        self.generated_counts = torch.zeros(num_slots, vocab_size, dtype=torch.int32,
                                            device=device)
        self.prompt_mask = torch.zeros(num_slots, vocab_size, dtype=torch.bool, device=device)

    def start(self, slot: int, prompt_ids: Sequence[int] | torch.Tensor) -> None:
        """Claim a slot for a new request: clear its counts and mark its prompt tokens."""
        self.generated_counts[slot].zero_()
        self.prompt_mask[slot].zero_()
        ids = torch.as_tensor(prompt_ids, dtype=torch.int64, device=self.prompt_mask.device)
        self.prompt_mask[slot, ids] = True

    def append(self, slots: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Count one generated token per entry (slots and token_ids are [N] int64)."""
        ones = torch.ones_like(token_ids, dtype=torch.int32)
        self.generated_counts.index_put_((slots, token_ids), ones, accumulate=True)

    def rows(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The counts [B, V] and prompt masks [B, V] of the given slots, in batch order."""
        return self.generated_counts.index_select(0, slots), self.prompt_mask.index_select(0, slots)


@dataclass
class SamplerOutput:
    """Chosen tokens, and their raw logprobs when any row asked for logprobs."""

    token_ids: torch.Tensor  # [B] int64
    logprobs: torch.Tensor | None = None  # [B] float32, of the chosen tokens
    top_ids: torch.Tensor | None = None  # [B, N] int64, N = the batch's widest request
    top_logprobs: torch.Tensor | None = None  # [B, N] float32, descending


def apply_penalties(logits: torch.Tensor, batch: SamplingBatch, counts: torch.Tensor,
                    prompt_mask: torch.Tensor) -> torch.Tensor:
    """Repetition (prompt + generated), then frequency and presence (generated) penalties."""
    seen = counts > 0
    repetition = batch.repetition_penalty[:, None]
    penalised = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits = torch.where(seen | prompt_mask, penalised, logits)
    logits = logits - batch.frequency_penalty[:, None] * counts.to(logits.dtype)
    return logits - batch.presence_penalty[:, None] * seen.to(logits.dtype)


def filter_probs(probs: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Zero the probabilities that top_k, then top_p, then min_p remove (no renormalising)."""
    vocab = probs.shape[-1]
    if batch.max_top_k is not None and batch.max_top_k < vocab:
        # Every row keeps at most max_top_k tokens, so only those candidates need ordering:
        # top_p and min_p are decided among them (min_p's reference, the maximum, is one).
        sorted_probs, order = probs.topk(batch.max_top_k, dim=-1)
    else:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(sorted_probs.shape[-1], device=probs.device)
    keep = ranks[None, :] < batch.top_k[:, None]
    in_top_k = sorted_probs * keep
    mass_before = in_top_k.cumsum(dim=-1) - in_top_k
    # top_p keeps the shortest prefix whose renormalised mass reaches top_p; the first token
    # always stays because its mass_before is 0 and top_p > 0.
    top_p_limit = batch.top_p[:, None] * in_top_k.sum(dim=-1, keepdim=True)
    keep &= (mass_before < top_p_limit) | (batch.top_p[:, None] >= 1.0)
    keep &= sorted_probs >= batch.min_p[:, None] * sorted_probs[:, :1]
    keep_by_token = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device).scatter_(1, order, keep)
    return probs.masked_fill(~keep_by_token, 0.0)


def _mix31(x: torch.Tensor) -> torch.Tensor:
    # A bijection on 31-bit integers (xorshift-multiply rounds); int64 never overflows.
    x = x ^ (x >> 16)
    x = (x * _MIX_MUL_1) & _MASK31
    x = x ^ (x >> 15)
    x = (x * _MIX_MUL_2) & _MASK31
    return x ^ (x >> 16)


def seeded_noise(seed_lo: torch.Tensor, seed_hi: torch.Tensor, steps: torch.Tensor,
                 vocab_size: int) -> torch.Tensor:
    """Exp(1) noise [S, V] that is a pure function of (seed, step, token id)."""
    step_key = _mix31((steps & _MASK31) ^ _STEP_SALT)
    key_a = _mix31(seed_lo ^ step_key)
    key_b = _mix31(seed_hi ^ _mix31(key_a ^ _INDEX_SALT))
    key_a, key_b = key_a[:, None], key_b[:, None]
    token = torch.arange(vocab_size, dtype=torch.int64, device=steps.device)[None, :]
    # Three keyed rounds over the token id: with two, one seed's step sequence showed a
    # borderline chi-square bias over a 64-token vocabulary. About 25 int64 passes over
    # [S, V], paid by seeded rows only; a fused kernel can compute the same bits in registers.
    hashed = _mix31(_mix31((_mix31(token ^ key_a) + key_b) & _MASK31) ^ key_a)
    # 23 bits, so bits + 0.5 is exact in float32 and the uniform stays below 1 (noise > 0).
    bits = hashed >> 8
    uniform = (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 23))
    return -torch.log(uniform)


def sample(logits: torch.Tensor, batch: SamplingBatch, history: TokenHistory | None = None,
           slots: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> SamplerOutput:
    """Choose one token per row of logits [B, V] under each row's SamplingParams."""
    logits = logits.to(torch.float32)
    raw_logprobs = None
    if batch.max_logprobs is not None:
        raw_logprobs = torch.log_softmax(logits, dim=-1)
    if batch.logit_bias is not None:
        rows, token_ids, values = batch.logit_bias
        logits = logits.index_put((rows, token_ids), values, accumulate=True)
    if batch.needs_penalties:
        if history is None or slots is None:
            raise ValueError("penalties need a TokenHistory and the batch's slots")
        counts, prompt_mask = history.rows(slots)
        logits = apply_penalties(logits, batch, counts, prompt_mask)

    token_ids = logits.argmax(dim=-1)
    if not batch.all_greedy:
        probs = torch.softmax(logits / batch.temperature[:, None], dim=-1)
        if batch.needs_filter:
            probs = filter_probs(probs, batch)
        # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p, needs no normalising,
        # and gives a zeroed probability no chance. The floor keeps E = 0 from making 0/0.
        noise = torch.empty_like(probs)
        if batch.seeded_rows.numel() < probs.shape[0]:
            noise.exponential_(generator=generator)
        if batch.seeded_rows.numel():
            steps = batch.steps.index_select(0, batch.seeded_rows)
            noise.index_copy_(0, batch.seeded_rows,
                              seeded_noise(batch.seed_lo, batch.seed_hi, steps, probs.shape[-1]))
        sampled = (probs / noise.clamp_min_(1e-20)).argmax(dim=-1)
        token_ids = torch.where(batch.greedy, token_ids, sampled)

    if raw_logprobs is None:
        return SamplerOutput(token_ids=token_ids)
    chosen = raw_logprobs.gather(1, token_ids[:, None]).squeeze(1)
    top_logprobs, top_ids = raw_logprobs.topk(batch.max_logprobs, dim=-1)
    return SamplerOutput(token_ids, chosen, top_ids, top_logprobs)
