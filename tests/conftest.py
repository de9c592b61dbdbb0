"""Suite-wide test settings."""

import torch

# The models under test are tiny: one torch thread is as fast as two, and on a
# shared 2-core runner two threads per process oversubscribe the cores badly
# (a fit measured 0.05 s with one thread took up to 27 s with two).
torch.set_num_threads(1)
