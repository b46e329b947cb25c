"""Tiny Qwen3.5 config.json dicts shared by the planner.models tests."""
import copy

import pytest

TINY_TEXT = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
    "linear_conv_kernel_dim": 4,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 256,
    "mtp_num_hidden_layers": 1,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000000,
        "partial_rotary_factor": 0.25,
        "mrope_section": [1, 1, 0],
        "mrope_interleaved": True,
    },
}
TINY_VISION = {
    "depth": 2,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_heads": 2,
    "out_hidden_size": 32,
    "num_position_embeddings": 16,
}


def tiny_raw(moe: bool = False, tied: bool = False) -> dict:
    """A complete tiny config.json dict (dense or MoE)."""
    text = copy.deepcopy(TINY_TEXT)
    text["tie_word_embeddings"] = tied
    if moe:
        text.update(model_type="qwen3_5_moe_text", num_experts=4, num_experts_per_tok=2,
                    moe_intermediate_size=8, shared_expert_intermediate_size=8)
    else:
        text.update(model_type="qwen3_5_text", intermediate_size=48)
    model_type = "qwen3_5_moe" if moe else "qwen3_5"
    return {
        "architectures": ["Qwen3_5MoeForConditionalGeneration" if moe
                          else "Qwen3_5ForConditionalGeneration"],
        "model_type": model_type,
        "text_config": text,
        "vision_config": dict(TINY_VISION, model_type=f"{model_type}_vision"),
        "tie_word_embeddings": tied,
    }


@pytest.fixture
def dense_raw():
    """Tiny dense config.json dict."""
    return tiny_raw(moe=False)


@pytest.fixture
def moe_raw():
    """Tiny MoE config.json dict."""
    return tiny_raw(moe=True)


@pytest.fixture
def make_raw():
    """The tiny_raw factory, for tests that need several variants."""
    return tiny_raw
