"""The demo checkpoint's shapes and its small JSON files (config, generation and processor configs)."""
from __future__ import annotations

from typing import Any

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import CheckpointConfig, parse_config
from qwen35.runtime.tokenizer.special_tokens import ADDED_TOKEN_IDS

# Small models, real schema. Fixed per facts §1 for every Qwen3.5 model: vocab 248320, head_dim
# 256 (so partial rotary 0.25 gives 64 dims and mrope [11, 11, 10] fits), linear key/value head
# dim 128, conv kernel 4, full attention on layers where (i + 1) % 4 == 0, one MTP layer.
# "tiny" keeps two value heads per key head (like 4B and larger) so the head repeat is exercised.
DEMO_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "linear_num_key_heads": 4, "linear_num_value_heads": 8,
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2},
    },
    "small": {
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 8,
        "num_attention_heads": 8, "num_key_value_heads": 2,
        "linear_num_key_heads": 16, "linear_num_value_heads": 16,
        "vision": {"depth": 4, "hidden_size": 128, "intermediate_size": 512, "num_heads": 4},
    },
}

# Like the 0.8B and 2B releases, the small demo defaults to non-thinking prompts; its
# generation config carries the model card's non-thinking text sampling.
DEMO_THINKING_DEFAULT = False
_ENDOFTEXT = ADDED_TOKEN_IDS["<|endoftext|>"]
_IM_END = ADDED_TOKEN_IDS["<|im_end|>"]


def demo_config_dict(shape: str = "tiny") -> dict[str, Any]:
    """The raw config.json dict of a demo shape, in the layout of the hub's Qwen3.5 configs."""
    if shape not in DEMO_SHAPES:
        raise InputError(f"unknown demo shape {shape!r}", f"use one of {', '.join(DEMO_SHAPES)}")
    dims = DEMO_SHAPES[shape]
    layers = dims["num_hidden_layers"]
    vision = dims["vision"]
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5",
        "image_token_id": ADDED_TOKEN_IDS["<|image_pad|>"],
        "video_token_id": ADDED_TOKEN_IDS["<|video_pad|>"],
        "vision_start_token_id": ADDED_TOKEN_IDS["<|vision_start|>"],
        "vision_end_token_id": ADDED_TOKEN_IDS["<|vision_end|>"],
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "qwen3_5_text",
            "vocab_size": 248320,
            "hidden_size": dims["hidden_size"],
            "intermediate_size": dims["intermediate_size"],
            "num_hidden_layers": layers,
            "num_attention_heads": dims["num_attention_heads"],
            "num_key_value_heads": dims["num_key_value_heads"],
            "head_dim": 256,
            "linear_num_key_heads": dims["linear_num_key_heads"],
            "linear_num_value_heads": dims["linear_num_value_heads"],
            "linear_key_head_dim": 128,
            "linear_value_head_dim": 128,
            "linear_conv_kernel_dim": 4,
            "layer_types": ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)],
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                                "mrope_section": [11, 11, 10], "mrope_interleaved": True},
            "max_position_embeddings": 262144,
            "tie_word_embeddings": True,
            "attn_output_gate": True,
            "mtp_num_hidden_layers": 1,
            "mamba_ssm_dtype": "float32",
            "eos_token_id": _ENDOFTEXT,
        },
        "vision_config": {
            "model_type": "qwen3_5_vision",
            "depth": vision["depth"],
            "hidden_size": vision["hidden_size"],
            "intermediate_size": vision["intermediate_size"],
            "num_heads": vision["num_heads"],
            "out_hidden_size": dims["hidden_size"],
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "num_position_embeddings": 2304,
            "in_channels": 3,
            "hidden_act": "gelu_pytorch_tanh",
        },
    }


def demo_config(shape: str = "tiny") -> CheckpointConfig:
    """The demo shape as a parsed CheckpointConfig."""
    return parse_config(demo_config_dict(shape), source=f"demo:{shape}")


def generation_config() -> dict[str, Any]:
    """generation_config.json: stop on <|im_end|> and <|endoftext|>, non-thinking text sampling."""
    return {
        "bos_token_id": _ENDOFTEXT,
        "pad_token_id": _ENDOFTEXT,
        "eos_token_id": [_IM_END, _ENDOFTEXT],
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 20,
    }


_PIXEL_NORMALISATION = {
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "rescale_factor": 1 / 255,
    "resample": 3,
}


def _patching(min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """The fields images and videos share: pixel budget, 16-pixel patches, 2 frames per temporal patch, 2x2 merge."""
    return {
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        **_PIXEL_NORMALISATION,
    }


def preprocessor_config() -> dict[str, Any]:
    """preprocessor_config.json: 16-pixel patches, 2 frames per temporal patch, 2x2 merge, 256^2..4096^2 pixels."""
    return {
        **_patching(65536, 16777216),
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "processor_class": "Qwen3VLProcessor",
    }


def video_preprocessor_config() -> dict[str, Any]:
    """video_preprocessor_config.json: the image patching plus a larger pixel budget and frame sampling."""
    return {
        **_patching(4096, 25165824),
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768,
        "do_sample_frames": True,
        "video_processor_type": "Qwen3VLVideoProcessor",
        "processor_class": "Qwen3VLProcessor",
    }
