"""Checkpoint layouts the loader accepts: fused experts, FP8 blocks, shards, MTP, vision, hub cache."""
import json
import shutil

import pytest
import torch

from qwen35.runtime import load_model
from qwen35.runtime.kernels import select_kernels
from qwen35.runtime.model.batch import Mode, packed_batch
from qwen35.runtime.model.cache import ModelCache
from qwen35.runtime.model.fp8 import dequantize_blockwise
from qwen35_tiny_checkpoints import (add_mtp, fuse_experts, read_config, read_tensors,
                                     VISION, text_config, to_fp8, write_checkpoint)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def our_state(model):
    """Our parameters under their checkpoint names: experts unfused to per-expert tensors, packed MLP
    projections split back into gate_proj and up_proj."""
    from qwen35.runtime.model.loader import checkpoint_name

    out = {}
    for name, param in model.named_parameters():
        ckpt = checkpoint_name(name)
        if ckpt.endswith(".mlp.experts.gate_up_proj"):
            base = ckpt[: -len("gate_up_proj")]
            for e, fused in enumerate(param):
                gate, up = fused.chunk(2)
                out[f"{base}{e}.gate_proj.weight"], out[f"{base}{e}.up_proj.weight"] = gate, up
        elif ckpt.endswith(".gate_up_proj.weight"):
            base = ckpt[: -len("gate_up_proj.weight")]
            out[f"{base}gate_proj.weight"], out[f"{base}up_proj.weight"] = param.chunk(2)
        elif ckpt.endswith(".mlp.experts.down_proj"):
            base = ckpt[: -len("down_proj")]
            for e, down in enumerate(param):
                out[f"{base}{e}.down_proj.weight"] = down
        else:
            out[ckpt] = param
    return out


def test_fused_expert_layout_gives_identical_logits(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints("moe_untied")
    config = read_config(path)
    fused = fuse_experts(read_tensors(path), config["text_config"]["num_experts"])
    assert "model.language_model.layers.0.mlp.experts.gate_up_proj" in fused
    assert not any(".experts.0." in n for n in fused)
    fused_dir = write_checkpoint(tmp_path / "fused", fused, config, shards=3)
    ids = torch.randint(0, 320, (2, 29))
    with torch.no_grad():
        assert torch.equal(load_model(fused_dir, progress=False)(ids), load_model(path, progress=False)(ids))


def test_sharded_index_with_unusual_shard_names(hf_checkpoints, tmp_path):
    path, hf = hf_checkpoints("dense_untied")
    odd = write_checkpoint(tmp_path / "odd", read_tensors(path), read_config(path), shards=4,
                           shard_name="weights-part{i}.of.{n}.bin.safetensors")
    assert not (odd / "model.safetensors").exists()
    ids = torch.randint(0, 320, (1, 13))
    with torch.no_grad():
        assert rel_err(load_model(odd, progress=False)(ids), hf(input_ids=ids).logits) < 1e-4


def test_every_tensor_lands_in_its_parameter_with_mtp_and_vision(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints("moe_tied")
    tensors, config = read_tensors(path), read_config(path)
    add_mtp(tensors, config)
    mtp_dir = write_checkpoint(tmp_path / "mtp", tensors, config)
    model = load_model(mtp_dir, progress=False)
    assert model.mtp is not None and model.visual is not None
    loaded = our_state(model)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name
    assert model.lm_head is None and model.output_weight is model.language_model.embed_tokens.weight


def test_mtp_forward_runs_on_loaded_weights(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints("dense_tied")
    tensors, config = read_tensors(path), read_config(path)
    add_mtp(tensors, config)
    model = load_model(write_checkpoint(tmp_path / "mtp", tensors, config), progress=False)
    ids = torch.randint(0, 320, (11,))
    with torch.no_grad():
        hidden = model.prompt_hidden(ids[None])[0]
        next_ids = torch.roll(ids, -1)
        cache = ModelCache(model.config.text, 1, 1, 16, torch.float32, "cpu", mtp_layers=1)
        batch = packed_batch(Mode.PREFILL, next_ids, [11], [0], torch.tensor([0], dtype=torch.int32),
                             torch.zeros(1, 1, dtype=torch.int32), 16)
        draft = model.compute_logits(model.mtp(model.language_model.embed_tokens(next_ids), hidden, batch, cache,
                                               select_kernels("cpu")))
    assert draft.shape == (11, 320) and not draft.isnan().any()


@pytest.mark.parametrize("variant", ["moe_untied", "fp8_dense"])
def test_fp8_block_scaled_checkpoint_dequantizes_to_the_originals(hf_checkpoints, tmp_path, variant):
    if variant == "fp8_dense":
        # intermediate 160 and hidden 32: MLP weights span two 128-row blocks, the second partial.
        import transformers

        text = text_config(False, False, 4, 2, 2, 4, intermediate=160)
        hf = transformers.Qwen3_5ForConditionalGeneration(
            transformers.Qwen3_5Config(text_config=text, vision_config=VISION))
        path = tmp_path / "bf16"
        hf.save_pretrained(path)
    else:
        path, _ = hf_checkpoints(variant)
    tensors, config = read_tensors(path), read_config(path)
    add_mtp(tensors, config)
    fp8, dequantized, fp8_config = to_fp8(tensors, config)
    scales = [n for n in fp8 if n.endswith("weight_scale_inv")]
    assert "model.language_model.layers.0.linear_attn.in_proj_qkv.weight_scale_inv" in scales
    assert "model.language_model.layers.0.linear_attn.in_proj_a.weight_scale_inv" not in scales
    assert fp8["model.language_model.layers.0.linear_attn.in_proj_qkv.weight"].dtype == torch.float8_e4m3fn
    model = load_model(write_checkpoint(tmp_path / "fp8", fp8, fp8_config, shards=2), progress=False)
    loaded = our_state(model)
    for name, expected in dequantized.items():
        assert torch.equal(loaded[name], expected), name
    # And it computes what a plain checkpoint of the dequantized weights computes.
    plain = load_model(write_checkpoint(tmp_path / "dequantized", dequantized, config), progress=False)
    ids = torch.randint(0, 320, (1, 17))
    with torch.no_grad():
        assert torch.allclose(model(ids), plain(ids), rtol=1e-5, atol=1e-5)


def test_fp8_fused_experts_with_stacked_block_scales(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints("moe_untied")
    config = read_config(path)
    fused = fuse_experts(read_tensors(path), config["text_config"]["num_experts"])
    fp8, dequantized, fp8_config = to_fp8(fused, config)
    gate_up = "model.language_model.layers.0.mlp.experts.gate_up_proj"
    assert fp8[gate_up].dtype == torch.float8_e4m3fn and fp8[gate_up + "_scale_inv"].shape == (4, 1, 1)
    model = load_model(write_checkpoint(tmp_path / "fp8", fp8, fp8_config), progress=False)
    params, ours = dict(model.named_parameters()), our_state(model)
    for name, expected in dequantized.items():  # fused expert tensors are our parameters as they are
        got = ours[name] if name in ours else params[name.removeprefix("model.")]
        assert torch.equal(got, expected), name


def test_dequantize_blockwise_partial_blocks():
    weight = torch.randn(300, 130).to(torch.float8_e4m3fn)
    scale = torch.rand(3, 2) + 0.5
    out = dequantize_blockwise(weight, scale)
    assert out.dtype == torch.float32
    assert torch.equal(out[299, 129], weight[299, 129].float() * scale[2, 1])
    assert torch.equal(out[127, 128], weight[127, 128].float() * scale[0, 1])
    assert torch.equal(out[128, 0], weight[128, 0].float() * scale[1, 0])


def test_text_only_export_loads_under_the_multimodal_names(hf_checkpoints):
    path, _ = hf_checkpoints("text_only")
    assert read_config(path)["model_type"] == "qwen3_5_text"
    model = load_model(path, progress=False)
    assert model.visual is None and model.lm_head is not None


def test_bfloat16_load_tracks_transformers_in_bfloat16(hf_checkpoints):
    import copy

    path, hf = hf_checkpoints("moe_untied")
    model = load_model(path, dtype="bfloat16", progress=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    hf_bf16 = copy.deepcopy(hf).to(torch.bfloat16)
    ids = torch.randint(0, 320, (2, 70))
    with torch.no_grad():
        ours = model(ids)
        assert ours.dtype == torch.bfloat16
        # Both round at the same points: far closer to each other than either is to fp32.
        assert rel_err(ours.float(), hf_bf16(input_ids=ids).logits.float()) < 2e-2


def test_hub_id_resolves_through_the_local_cache(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints("dense_tied")
    repo = tmp_path / "hub" / "models--Qwen--Qwen3.5-Tiny"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(path, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    model = load_model("Qwen/Qwen3.5-Tiny", progress=False, cache_dir=tmp_path / "hub")
    assert model.config.text.hidden_size == 32


def test_progress_bar_goes_to_stderr_and_can_be_silenced(hf_checkpoints, capfd):
    path, _ = hf_checkpoints("dense_tied")
    load_model(path, progress=False)
    quiet = capfd.readouterr()
    assert quiet.out == "" and quiet.err == ""
    load_model(path)
    loud = capfd.readouterr()
    assert loud.out == ""
    assert "1/1" in loud.err and "shards" in loud.err


def test_open_checkpoint_reads_config_and_headers_only(hf_checkpoints):
    from qwen35.runtime.model.checkpoint import open_checkpoint

    path, _ = hf_checkpoints("moe_untied")
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen3_5_moe"
    ckpt = open_checkpoint(path)
    assert ckpt.config.text.is_moe and ckpt.config.text.num_experts == 4
    assert ckpt.shards == [path / "model.safetensors"]
    loc = ckpt.tensors["model.language_model.layers.0.mlp.experts.3.down_proj.weight"]
    assert loc.shape == (32, 16) and loc.dtype == "F32"
