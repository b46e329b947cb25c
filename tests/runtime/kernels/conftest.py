"""Kernel tests run single-threaded: their tensors are small, and thread hand-offs on a shared
2-core machine cost more than they save."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
