import pytest
import torch

# one thread: the test models are tiny, and thread start-up and oversubscription on a 2-core CI
# machine cost more than the arithmetic
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llada():
    from spiffy.backends.tiny import tiny_backend

    return tiny_backend("llada", seed=0, dtype=torch.float64)


@pytest.fixture(scope="session")
def tiny_dream():
    from spiffy.backends.tiny import tiny_backend

    return tiny_backend("dream", seed=1, dtype=torch.float64)


def random_prompts(n, vocab=59, seed=0, lo=3, hi=12):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ln = int(torch.randint(lo, hi, (1,), generator=g))
        out.append(torch.randint(0, vocab, (ln,), generator=g).tolist())
    return out
