"""Tiny random Qwen3.5 checkpoints written by transformers, and rewrites of them on disk
(fused experts, FP8 blocks, sharded index, MTP tensors) for the runtime's tests."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

VOCAB = 320

# name -> (moe, tied, q heads, kv heads, linear k heads, linear v heads, layer types or None)
VARIANTS = {
    "dense_tied": (False, True, 4, 2, 2, 4, None),
    "dense_untied": (False, False, 4, 1, 2, 2,
                     ["linear_attention", "full_attention", "linear_attention", "full_attention"]),
    "moe_untied": (True, False, 4, 2, 2, 4, None),
    "moe_tied": (True, True, 4, 1, 1, 2, None),
}
ALL_VARIANTS = [*VARIANTS, "text_only"]  # text_only: a Qwen3_5ForCausalLM export (dense, untied)


def text_config(moe: bool, tied: bool, heads: int, kv_heads: int, k_heads: int, v_heads: int,
                layer_types=None, intermediate: int = 48) -> dict:
    """A 4-layer text config with hidden 32 and head_dim 32 (8 rotary dims, mrope [2, 1, 1])."""
    config = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=32, linear_num_key_heads=k_heads,
        linear_num_value_heads=v_heads, linear_key_head_dim=8, linear_value_head_dim=16,
        linear_conv_kernel_dim=4, tie_word_embeddings=tied, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
    )
    if layer_types:
        config["layer_types"] = layer_types
    if moe:
        config.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                      shared_expert_intermediate_size=24)
    else:
        config["intermediate_size"] = intermediate
    return config


VISION = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
              num_position_embeddings=16, patch_size=4, temporal_patch_size=2, spatial_merge_size=2)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights of O(1/sqrt(fan_in)), non-trivial norm weights and realistic decay parameters."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("A_log"):
            param.copy_(torch.empty(param.shape).uniform_(1.0, 16.0, generator=gen).log())
        elif name.endswith("dt_bias"):
            param.copy_(1.0 + 0.5 * torch.randn(param.shape, generator=gen))
        elif param.dim() == 1:  # norms (zero-centred or plain), biases
            param.copy_(0.3 * torch.randn(param.shape, generator=gen) + (1.0 if "linear_attn.norm" in name else 0.0))
        else:
            fan_in = param.shape[-1] if param.dim() <= 3 else math.prod(param.shape[1:])
            param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))


def build_hf_model(variant: str, seed: int = 0):
    """A random transformers Qwen3.5 model (with a tiny vision tower) for one of VARIANTS."""
    import transformers

    moe, tied, heads, kv_heads, k_heads, v_heads, layer_types = VARIANTS[variant]
    text = text_config(moe, tied, heads, kv_heads, k_heads, v_heads, layer_types)
    if moe:
        cfg = transformers.Qwen3_5MoeConfig(text_config=text, vision_config=VISION, tie_word_embeddings=tied)
        model = transformers.Qwen3_5MoeForConditionalGeneration(cfg)
    else:
        cfg = transformers.Qwen3_5Config(text_config=text, vision_config=VISION, tie_word_embeddings=tied)
        model = transformers.Qwen3_5ForConditionalGeneration(cfg)
    randomize(model, seed)
    return model.eval()


def build_hf_text_only(seed: int = 3):
    """A text-only Qwen3_5ForCausalLM (model.layers.* names, model_type qwen3_5_text)."""
    import transformers

    model = transformers.Qwen3_5ForCausalLM(transformers.Qwen3_5TextConfig(**text_config(False, False, 4, 2, 2, 4)))
    randomize(model, seed)
    return model.eval()


def read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory (single file or sharded)."""
    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            out.update({name: handle.get_tensor(name) for name in handle.keys()})
    return out


def read_config(directory: Path) -> dict:
    """config.json as a dict."""
    return json.loads((directory / "config.json").read_text())


def write_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], config: dict,
                     shards: int = 1, shard_name: str = "model.safetensors-{i:05d}-of-{n:05d}.safetensors") -> Path:
    """Write config.json and the tensors: one model.safetensors, or `shards` files plus an index."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    if shards == 1:
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
        return directory
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        file = shard_name.format(i=i + 1, n=shards)
        save_file({n: tensors[n].contiguous() for n in part}, directory / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return directory


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A private copy to break."""
    shutil.copytree(src, dst)
    return dst


def fuse_experts(tensors: dict[str, torch.Tensor], num_experts: int) -> dict[str, torch.Tensor]:
    """Per-expert gate/up/down -> fused gate_up_proj [E, 2I, H] (gate first) and down_proj [E, H, I]."""
    out = {n: t for n, t in tensors.items() if ".mlp.experts." not in n}
    bases = sorted({n.split(".mlp.experts.")[0] for n in tensors if ".mlp.experts." in n})
    for base in bases:
        e = f"{base}.mlp.experts."
        out[e + "gate_up_proj"] = torch.stack([
            torch.cat([tensors[f"{e}{i}.gate_proj.weight"], tensors[f"{e}{i}.up_proj.weight"]])
            for i in range(num_experts)])
        out[e + "down_proj"] = torch.stack([tensors[f"{e}{i}.down_proj.weight"] for i in range(num_experts)])
    return out


def add_mtp(tensors: dict[str, torch.Tensor], config: dict, seed: int = 7) -> None:
    """Random MTP-head tensors (one full-attention layer, the model's MLP kind) and the config key."""
    text = config["text_config"]
    text["mtp_num_hidden_layers"] = 1
    gen = torch.Generator().manual_seed(seed)
    full = text["layer_types"].index("full_attention")
    src = f"model.language_model.layers.{full}."
    for name, tensor in list(tensors.items()):
        if name.startswith(src):
            tensors["mtp.layers.0." + name[len(src):]] = torch.randn(tensor.shape, generator=gen)
    hidden = text["hidden_size"]
    for norm in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        tensors[f"mtp.{norm}.weight"] = torch.randn(hidden, generator=gen)
    tensors["mtp.fc.weight"] = torch.randn(hidden, 2 * hidden, generator=gen)


FP8_MAX = 448.0
# Modules the FP8 exports keep in BF16 (besides norms, A_log, dt_bias and the whole vision tower).
BF16_KEPT = ("embed_tokens", "lm_head", "conv1d", "in_proj_a", "in_proj_b", "mtp.fc", "mlp.gate.",
             "shared_expert_gate")


def quantize_fp8_blocks(weight: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 weight and the fp32 scale per (block x block) tile such that weight ~= q * scale."""
    rows, cols = weight.shape
    row_blocks, col_blocks = math.ceil(rows / block), math.ceil(cols / block)
    scale = torch.empty(row_blocks, col_blocks)
    quantized = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(row_blocks):
        for j in range(col_blocks):
            tile = weight[i * block:(i + 1) * block, j * block:(j + 1) * block].float()
            s = tile.abs().max().clamp_min(1e-12) / FP8_MAX
            scale[i, j] = s
            quantized[i * block:(i + 1) * block, j * block:(j + 1) * block] = (tile / s).to(torch.float8_e4m3fn)
    return quantized, scale


def dequantize_reference(quantized: torch.Tensor, scale: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Tile by tile, the inverse of quantize_fp8_blocks."""
    out = quantized.float()
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            out[i * block:(i + 1) * block, j * block:(j + 1) * block] *= scale[i, j]
    return out


def is_fp8_quantized(name: str) -> bool:
    """Whether an FP8 export quantizes this tensor (2D Linear weights outside BF16_KEPT)."""
    if not name.endswith(".weight") or name.startswith("model.visual."):
        return False
    return not any(kept in name for kept in BF16_KEPT)


def to_fp8(tensors: dict[str, torch.Tensor], config: dict) -> tuple[dict, dict, dict]:
    """(FP8 tensors, their dequantized values, config): quantized Linear weights with
    weight_scale_inv per 128x128 block, every other tensor stored BF16."""
    out, dequantized = {}, {}
    for name, tensor in tensors.items():
        if tensor.dim() == 2 and is_fp8_quantized(name):
            q, s = quantize_fp8_blocks(tensor)
            out[name], out[name[: -len("weight")] + "weight_scale_inv"] = q, s
            dequantized[name] = dequantize_reference(q, s)
        elif name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
            # Fused experts [E, out, in]: blocks per expert, scales [E, out/128, in/128] as `<name>_scale_inv`.
            pieces = [quantize_fp8_blocks(expert) for expert in tensor]
            out[name] = torch.stack([q for q, _ in pieces])
            out[name + "_scale_inv"] = torch.stack([s for _, s in pieces])
            dequantized[name] = torch.stack([dequantize_reference(q, s) for q, s in pieces])
        else:
            out[name] = tensor.to(torch.bfloat16)
            dequantized[name] = out[name].float()
    config = json.loads(json.dumps(config))
    config["quantization_config"] = {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128],
        "modules_to_not_convert": ["lm_head", "model.visual", "mtp.fc"] + [
            n[: -len(".weight")] for n in tensors if n.endswith(".weight") and any(k in n for k in BF16_KEPT[2:])],
    }
    return out, dequantized, config
