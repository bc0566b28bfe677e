import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    # threads' spin-waiting makes a busy neighbour slow these tests down five-fold.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
