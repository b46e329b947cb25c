"""checkpoint_tensors against transformers' own models and the facts sheet (§2, §3)."""
import math

import pytest

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import config_to_dict, parse_config
from qwen35.planner.models.tensors import (
    DTYPE_BYTES,
    SAFETENSORS_DTYPES,
    SHARDINGS,
    TensorSpec,
    checkpoint_tensors,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _hf_model(cfg, device):
    hf_config = transformers.AutoConfig.for_model(**config_to_dict(cfg))
    cls = (transformers.Qwen3_5MoeForConditionalGeneration if cfg.text.is_moe
           else transformers.Qwen3_5ForConditionalGeneration)
    with torch.device(device):
        return cls(hf_config)


def _ours(cfg, **kwargs):
    return {s.name: s.shape for s in checkpoint_tensors(cfg, **kwargs) if s.component != "mtp"}


@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_per_expert_layout_matches_save_pretrained(make_raw, tmp_path, moe, tied):
    from safetensors import safe_open

    cfg = parse_config(make_raw(moe=moe, tied=tied))
    _hf_model(cfg, "cpu").save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        on_disk = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert on_disk == _ours(cfg, expert_layout="per_expert")
    assert ("lm_head.weight" in on_disk) is not tied


@pytest.mark.parametrize("moe", [False, True])
def test_fused_layout_matches_module_parameters(make_raw, moe):
    cfg = parse_config(make_raw(moe=moe, tied=True))
    model = _hf_model(cfg, "meta")
    # state_dict lists tied lm_head too; a tied checkpoint does not store it.
    params = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert params == _ours(cfg, expert_layout="fused")


def test_mtp_head_follows_the_facts(make_raw):
    for moe in (False, True):
        cfg = parse_config(make_raw(moe=moe))
        h = cfg.text.hidden_size
        mtp = {s.name: s.shape for s in checkpoint_tensors(cfg) if s.component == "mtp"}
        assert all(name.startswith("mtp.") for name in mtp)
        assert mtp["mtp.fc.weight"] == (h, 2 * h)
        for norm in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
            assert mtp[f"mtp.{norm}.weight"] == (h,)
        # mtp.layers.0 is a full-attention decoder layer shaped like the main model's layer 3.
        full = {n.split("layers.3.", 1)[1]: s for n, s in _ours(cfg).items()
                if n.startswith("model.language_model.layers.3.")}
        layer = {n.split("layers.0.", 1)[1]: s for n, s in mtp.items()
                 if n.startswith("mtp.layers.0.")}
        assert layer == full
        assert ("mlp.experts.0.gate_proj.weight" in layer) is moe


def test_no_mtp_when_config_has_none(dense_raw):
    dense_raw["text_config"]["mtp_num_hidden_layers"] = 0
    specs = checkpoint_tensors(parse_config(dense_raw))
    assert not [s for s in specs if s.component == "mtp"]


def _odd_dense(make_raw):
    raw = make_raw(moe=False)
    raw["text_config"].update(hidden_size=200, intermediate_size=300)
    return parse_config(raw)


def test_fp8_quantizes_linears_with_block_scales(make_raw):
    cfg = _odd_dense(make_raw)
    specs = {s.name: s for s in checkpoint_tensors(cfg, precision="fp8")}
    p = "model.language_model.layers."
    up = specs[f"{p}0.mlp.up_proj.weight"]
    assert (up.dtype, up.shape) == ("fp8_e4m3", (300, 200))
    scale = specs[f"{p}0.mlp.up_proj.weight_scale_inv"]
    assert (scale.dtype, scale.shape) == ("fp32", (math.ceil(300 / 128), math.ceil(200 / 128)))
    assert scale.params == 0 and scale.sharding == up.sharding == "column"
    assert specs[f"{p}3.self_attn.q_proj.weight"].dtype == "fp8_e4m3"
    assert specs["mtp.layers.0.self_attn.o_proj.weight"].dtype == "fp8_e4m3"
    kept = ["model.language_model.embed_tokens.weight", "lm_head.weight", "mtp.fc.weight",
            f"{p}0.linear_attn.conv1d.weight", f"{p}0.linear_attn.in_proj_a.weight",
            f"{p}0.linear_attn.in_proj_b.weight", f"{p}0.linear_attn.A_log",
            f"{p}0.linear_attn.dt_bias", "model.visual.blocks.0.attn.qkv.weight"]
    assert {specs[n].dtype for n in kept} == {"bf16"}
    assert f"{p}0.linear_attn.in_proj_a.weight_scale_inv" not in specs
    assert not [s for s in specs.values() if s.component == "vision" and s.dtype != "bf16"]


def test_fp8_moe_keeps_router_bf16_and_scales_experts(moe_raw):
    cfg = parse_config(moe_raw)
    specs = {s.name: s for s in checkpoint_tensors(cfg, precision="fp8")}
    p = "model.language_model.layers.0.mlp."
    assert specs[f"{p}gate.weight"].dtype == "bf16"
    assert specs[f"{p}shared_expert_gate.weight"].dtype == "bf16"
    assert specs[f"{p}experts.3.down_proj.weight"].dtype == "fp8_e4m3"
    assert specs[f"{p}experts.3.down_proj.weight_scale_inv"].sharding == "expert"
    assert specs[f"{p}shared_expert.up_proj.weight"].dtype == "fp8_e4m3"
    fused = {s.name: s for s in checkpoint_tensors(cfg, "fp8", expert_layout="fused")}
    assert fused[f"{p}experts.gate_up_proj"].shape == (4, 16, 32)
    assert fused[f"{p}experts.gate_up_proj_scale_inv"].shape == (4, 1, 1)


def test_nvfp4_packs_routed_experts_only(moe_raw):
    cfg = parse_config(moe_raw)
    specs = {s.name: s for s in checkpoint_tensors(cfg, precision="nvfp4")}
    e = "model.language_model.layers.0.mlp.experts.1.gate_proj."
    assert (specs[e + "weight"].dtype, specs[e + "weight"].shape) == ("fp4_e2m1", (8, 16))
    assert specs[e + "weight"].params == 8 * 32
    assert (specs[e + "weight_scale"].dtype, specs[e + "weight_scale"].shape) == (
        "fp8_e4m3_scale", (8, 2))
    assert specs[e + "weight_scale_2"].shape == specs[e + "input_scale"].shape == ()
    down = specs["model.language_model.layers.0.mlp.experts.1.down_proj.weight"]
    assert down.shape == (32, 4)
    quantized = {s.name for s in specs.values() if s.dtype != "bf16" and not s.is_scale}
    assert all(".mlp.experts." in n and n.startswith("model.language_model.") for n in quantized)
    assert specs["mtp.layers.0.mlp.experts.1.gate_proj.weight"].dtype == "bf16"
    # The FP8 KV cache ships per-layer k/v scales on full-attention layers only.
    assert "model.language_model.layers.3.self_attn.k_proj.k_scale" in specs
    assert "model.language_model.layers.0.self_attn.k_proj.k_scale" not in specs


def test_bad_arguments_raise_input_error(dense_raw, moe_raw):
    dense, moe = parse_config(dense_raw), parse_config(moe_raw)
    for call in (lambda: checkpoint_tensors(dense, precision="int4"),
                 lambda: checkpoint_tensors(dense, expert_layout="stacked"),
                 lambda: checkpoint_tensors(dense, precision="nvfp4"),
                 lambda: checkpoint_tensors(moe, precision="nvfp4", expert_layout="fused")):
        with pytest.raises(InputError):
            call()


@pytest.mark.parametrize("precision", ["bf16", "fp8", "nvfp4"])
def test_specs_are_well_formed(moe_raw, precision):
    specs = checkpoint_tensors(parse_config(moe_raw), precision=precision)
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert s.dtype in DTYPE_BYTES and s.dtype in SAFETENSORS_DTYPES
        assert s.sharding in SHARDINGS and s.component in ("language", "mtp", "vision")
        assert s.nbytes == math.prod(s.shape) * DTYPE_BYTES[s.dtype]


def test_tensor_spec_counts():
    packed = TensorSpec("a.weight", (4, 8), "fp4_e2m1", "language", "expert")
    assert (packed.numel, packed.nbytes, packed.params) == (32, 32, 64)
    scale = TensorSpec("a.weight_scale_2", (), "fp32", "language", "expert")
    assert (scale.numel, scale.nbytes, scale.params, scale.is_scale) == (1, 4, 0, True)
