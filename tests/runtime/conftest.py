"""Runtime test fixtures: one intra-op thread, and the demo checkpoint written once per session."""
import pytest
import torch

from qwen35.runtime.demo import write_demo_checkpoint


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box thread
    hand-offs (index_add_ in transformers' MoE) cost milliseconds per op: run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_path(tmp_path_factory):
    """The demo checkpoint (seed 0), written once; tests read it and never change it."""
    return write_demo_checkpoint(tmp_path_factory.mktemp("demo") / "qwen35-demo", seed=0)
