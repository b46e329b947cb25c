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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box thread
    hand-offs (index_add_ in transformers' MoE) cost milliseconds per op: run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
