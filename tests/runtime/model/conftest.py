"""Session fixtures: tiny transformers checkpoints saved once, shared by the model tests."""
import pytest
import torch

from qwen35_tiny_checkpoints import build_hf_model, build_hf_text_only


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """variant -> (checkpoint dir, transformers model), built on first use."""
    built = {}

    def get(variant: str):
        if variant not in built:
            path = tmp_path_factory.mktemp(variant)
            model = build_hf_text_only() if variant == "text_only" else build_hf_model(variant, seed=len(built))
            model.save_pretrained(path)
            built[variant] = (path, model)
        return built[variant]

    return get


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
