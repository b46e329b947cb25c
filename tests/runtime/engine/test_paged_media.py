"""The paged runner with images and videos against TorchModelRunner: same greedy tokens, same logits.

Prompts are built by hand around random pixels (no processor): text, vision start, one pad per
merged patch, vision end. The demo model's matrices are redrawn (spread_weights) so its logits
are not flat; fp32 on the CPU, so the two runners agree to rounding. Every check compares the
logits after each prefill call that ends a prompt and after every decode step: wrong rotary
positions (a lost rope delta) or misplaced vision embeddings move them far past the tolerance.
"""
from __future__ import annotations

import pytest
import torch

from qwen35.runtime.bench.agreement import spread_weights
from qwen35.runtime.engine.multimodal import MediaInputs
from qwen35.runtime.engine.paged_runner import PagedModelRunner
from qwen35.runtime.engine.runner import TorchModelRunner
from qwen35.runtime.model.loader import load_model

DECODE_STEPS = 8
RELATIVE_TOLERANCE = 1e-5  # fp32, same weights, only the summation order differs


@pytest.fixture(scope="module")
def model(demo_path):
    model = load_model(demo_path, progress=False)
    spread_weights(model, seed=1)
    return model


def text_ids(count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 248000, (count,), generator=generator).tolist()  # below the special tokens


def random_pixels(model, grid: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Flattened patches [t * h * w, C * Tp * P * P] for one grid."""
    patch_dim = model.visual.patch_embed.proj.weight[0].numel()
    return torch.randn(grid[0] * grid[1] * grid[2], patch_dim, generator=torch.Generator().manual_seed(seed))


def vision_span(model, token_id: int, pads: int) -> list[int]:
    config = model.config
    return [config.vision_start_token_id] + [token_id] * pads + [config.vision_end_token_id]


def image_prompt(model, grid=(1, 4, 6), seed=0) -> tuple[list[int], MediaInputs]:
    """Five text tokens, the image (a pad per 2x2 merged patch), six text tokens."""
    pads = grid[0] * grid[1] * grid[2] // 4
    ids = text_ids(5, seed) + vision_span(model, model.config.image_token_id, pads) + text_ids(6, seed + 1)
    return ids, MediaInputs(pixel_values=random_pixels(model, grid, seed), image_grid_thw=[grid])


def video_prompt(model, seed=0) -> tuple[list[int], MediaInputs]:
    """A 4x4-patch video of two frame groups, each behind its own timestamp text, as the chat template lays it out."""
    grid = (2, 4, 4)
    groups = [text_ids(2, seed + 10 + t) + vision_span(model, model.config.video_token_id, 4) for t in range(2)]
    ids = text_ids(4, seed) + groups[0] + groups[1] + text_ids(5, seed + 1)
    return ids, MediaInputs(pixel_values_videos=random_pixels(model, grid, seed), video_grid_thw=[grid])


def both_runners(model, num_rows: int, max_len: int = 64):
    """(paged, reference): small pages so prompts cross page boundaries."""
    return PagedModelRunner(model, num_rows, max_len, page_size=8), TorchModelRunner(model, num_rows, max_len)


@torch.inference_mode()
def prefill_chunks(runner, row: int, prompt_ids: list[int], prepared, edges: list[int]) -> torch.Tensor:
    """Prefill prompt_ids[edges[i]:edges[i + 1]] one call each (with its media slice); the last logits [V]."""
    runner.reset_row(row)
    for start, end in zip(edges, edges[1:]):
        media = None if prepared is None else prepared.chunk(start, end)
        logits = runner.prefill(row, prompt_ids[start:end], media=media)
    return logits


@torch.inference_mode()
def greedy_decode(runner, rows: list[int], logits: torch.Tensor, steps: int = DECODE_STEPS):
    """Greedy tokens [steps + 1][rows] from prefill logits [rows, V] on, and those logits plus every step's."""
    history, tokens = [logits], [logits.argmax(-1).tolist()]
    for _ in range(steps):
        logits = runner.decode(rows, tokens[-1]).clone()  # the paged runner's logits live until its next decode
        history.append(logits)
        tokens.append(logits.argmax(-1).tolist())
    return tokens, torch.stack(history)


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).norm() / reference.norm()).item()


def assert_agree(ours, reference) -> None:
    (tokens, logits), (want_tokens, want_logits) = ours, reference
    assert not logits.isnan().any()
    assert tokens == want_tokens
    assert relative_error(logits, want_logits) < RELATIVE_TOLERANCE


def run_single(runner, prompt_ids, media, edges):
    prepared = runner.prepare_media(prompt_ids, media)
    logits = prefill_chunks(runner, 0, prompt_ids, prepared, edges)
    return greedy_decode(runner, [0], logits[None]), prepared


def test_image_prompt_in_one_chunk(model):
    prompt_ids, media = image_prompt(model)
    paged, reference = both_runners(model, 1)
    ours, prepared = run_single(paged, prompt_ids, media, [0, len(prompt_ids)])
    want, _ = run_single(reference, prompt_ids, media, [0, len(prompt_ids)])
    assert_agree(ours, want)
    assert paged.rope_deltas[0] == reference.cache.rope_deltas[0] == prepared.rope_delta < 0


def test_chunk_edges_inside_the_image(model):
    prompt_ids, media = image_prompt(model, grid=(1, 8, 8), seed=3)  # 16 pads at 6..21
    edges = [0, 9, 14, 20, len(prompt_ids)]
    paged, reference = both_runners(model, 1)
    ours, prepared = run_single(paged, prompt_ids, media, edges)
    assert_agree(ours, run_single(reference, prompt_ids, media, edges)[0])
    assert paged.rope_deltas[0] == prepared.rope_delta


def test_video_prompt_with_edges_inside_its_frame_groups(model):
    prompt_ids, media = video_prompt(model, seed=5)  # frame-group pads at 7..10 and 15..18
    edges = [0, 9, 17, len(prompt_ids)]
    paged, reference = both_runners(model, 1)
    ours, prepared = run_single(paged, prompt_ids, media, edges)
    assert_agree(ours, run_single(reference, prompt_ids, media, edges)[0])
    assert paged.rope_deltas[0] == prepared.rope_delta < 0


@torch.inference_mode()
def test_packed_batches_mix_media_and_text_rows(model):
    image_ids, image_media = image_prompt(model, seed=7)  # 19 tokens, image pads at 6..11, vision end at 12
    video_ids, video_media = video_prompt(model, seed=9)
    plain_ids = text_ids(20, seed=11)
    paged, reference = both_runners(model, 3)
    # Reference: row by row, media slices on every chunk of a media prompt.
    want_prefill = []
    for row, ids, media, edges in ((0, image_ids, image_media, [0, 15, 19]), (1, plain_ids, None, [0, 12, 20]),
                                   (2, video_ids, video_media, [0, len(video_ids)])):
        prepared = None if media is None else reference.prepare_media(ids, media)
        want_prefill.append(prefill_chunks(reference, row, ids, prepared, edges))
    want = greedy_decode(reference, [0, 1, 2], torch.stack(want_prefill))
    # Paged, packed: the text row packed before the image chunk (its pads sit mid-pack), then the
    # image prompt's text tail without media (rotated by the row's recorded delta) beside a text
    # chunk and the whole video prompt (a row of non-zero delta in a batch with M-RoPE positions).
    image_prepared = paged.prepare_media(image_ids, image_media)
    video_prepared = paged.prepare_media(video_ids, video_media)
    for row in range(3):
        paged.reset_row(row)
    paged.prefill_batch([1, 0], [plain_ids[:12], image_ids[:15]], [None, image_prepared.chunk(0, 15)])
    assert paged.rope_deltas == [image_prepared.rope_delta, 0, 0]
    last = paged.prefill_batch([0, 1, 2], [image_ids[15:], plain_ids[12:], video_ids],
                               [None, None, video_prepared.chunk(0, len(video_ids))])
    assert paged.rope_deltas == [image_prepared.rope_delta, 0, video_prepared.rope_delta]
    assert_agree(greedy_decode(paged, [0, 1, 2], last), want)


def test_row_reused_for_text_after_media(model):
    # A stale delta would shift every position of the text prompt alike, which rotary attention does
    # not see (it is relative): the reset is checked on the runner's bookkeeping, the logits besides.
    image_ids, media = image_prompt(model, seed=13)
    plain_ids = text_ids(17, seed=14)
    results = []
    for runner in both_runners(model, 1):
        run_single(runner, image_ids, media, [0, len(image_ids)])
        if isinstance(runner, PagedModelRunner):
            assert runner.rope_deltas[0] != 0
            runner.release_row(0)
            assert runner.rope_deltas[0] == 0
        logits = prefill_chunks(runner, 0, plain_ids, None, [0, 10, len(plain_ids)])
        results.append(greedy_decode(runner, [0], logits[None]))
    assert_agree(*results)
    # And the same as a runner that never saw the image.
    fresh, _ = both_runners(model, 1)
    assert_agree(results[0], greedy_decode(fresh, [0], prefill_chunks(fresh, 0, plain_ids, None, [0, 17])[None]))


def test_media_that_does_not_fit_the_chunk_is_refused(model):
    prompt_ids, media = image_prompt(model)
    paged, _ = both_runners(model, 1)
    prepared = paged.prepare_media(prompt_ids, media)
    with pytest.raises(ValueError, match="6 pad tokens"):
        paged.prefill(0, prompt_ids[:12], media={"positions": prepared.chunk(0, 12)["positions"]})
    with pytest.raises(ValueError, match="media positions"):
        paged.prefill(0, prompt_ids[:12], media=prepared.chunk(0, 11))
