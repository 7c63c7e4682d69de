"""VLA tests run on at most two threads."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # The test machine is shared; two threads are what the benchmark target assumes too.
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)
