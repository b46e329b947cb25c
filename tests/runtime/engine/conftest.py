"""Engine test fixtures: one thread (tiny tensors on a shared 2-core box) and one demo checkpoint."""
import pytest
import torch

from qwen35.runtime.demo import write_demo_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_path(tmp_path_factory):
    """The demo checkpoint, written once for the engine tests (they read it, never change it)."""
    return write_demo_checkpoint(tmp_path_factory.mktemp("engine") / "demo", seed=0)
