"""A plain, hand-written PyTorch affine coupling flow and training loop.

The reference that :mod:`benchmarks.bench_training` compares
``skflowsearch._training.fit_flows`` against: the same architecture written
the way one would write a single flow without a member dimension --
``nn.Linear`` + ``nn.Tanh`` conditioners, one module per layer, an
``AdamW`` over ``model.parameters()`` and ``clip_grad_norm_``.

* every layer: ActNorm ``x * exp(a) + b`` (data-initialised), then an affine
  coupling whose conditioner sees ``x * mask`` and outputs a log-scale
  (soft-clamped, ``c * tanh(s / c)``) and a shift for the free features;
* the last ``nn.Linear`` of each conditioner starts at zero (identity flow);
* standard normal base, mean NLL loss, AdamW, global gradient-norm clipping,
  minibatches from ``torch.randperm`` with a seeded generator, the last
  incomplete batch dropped.

``HandFlow.from_stack`` copies the initial weights of a one-member
``CouplingFlowStack`` so both implementations start from the same point and
their loss curves can be compared number by number.
"""

import math

import numpy as np
import torch
from torch import nn

from skflowsearch._bijections import Affine


class HandCoupling(nn.Module):
    def __init__(self, mask, hidden_layer_sizes, max_log_scale):
        super().__init__()
        n_features = mask.numel()
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        self.register_buffer("free", 1.0 - self.mask)
        self.max_log_scale = float(max_log_scale)
        sizes = (n_features, *hidden_layer_sizes, 2 * n_features)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.net = nn.Sequential(*layers[:-1])
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.actnorm_log_scale = nn.Parameter(torch.zeros(n_features))
        self.actnorm_bias = nn.Parameter(torch.zeros(n_features))

    def forward(self, x):
        x = x * torch.exp(self.actnorm_log_scale) + self.actnorm_bias
        log_det = self.actnorm_log_scale.sum()
        log_scale, shift = self.net(x * self.mask).chunk(2, dim=-1)
        log_scale = self.max_log_scale * torch.tanh(log_scale / self.max_log_scale) * self.free
        y = x * torch.exp(log_scale) + shift * self.free
        return y, log_det + log_scale.sum(-1)


class HandFlow(nn.Module):
    def __init__(self, masks, hidden_layer_sizes=(64, 64), max_log_scale=3.0):
        super().__init__()
        masks = torch.as_tensor(np.asarray(masks, dtype=bool))
        self.layers = nn.ModuleList(HandCoupling(m, hidden_layer_sizes, max_log_scale) for m in masks)
        self.n_features = masks.shape[1]

    def log_prob(self, x):
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return -0.5 * (x * x).sum(-1) - 0.5 * self.n_features * math.log(2 * math.pi) + log_det

    @classmethod
    @torch.no_grad()
    def from_stack(cls, stack):
        """Same masks and (current) weights as member 0 of an affine ``CouplingFlowStack``."""
        hidden = tuple(w.shape[-1] for w in stack.weights[:-1])
        if not isinstance(stack.bijection, Affine):
            raise ValueError(f"HandFlow is affine; the stack's bijection is {stack.bijection!r}")
        flow = cls(stack.masks[0].bool(), hidden, stack.bijection.max_log_scale)
        for index, layer in enumerate(flow.layers):
            linears = [m for m in layer.net if isinstance(m, nn.Linear)]
            for linear, weight, bias in zip(linears, stack.weights, stack.biases):
                linear.weight.copy_(weight[0, index].T)
                linear.bias.copy_(bias[0, index, 0])
            layer.actnorm_log_scale.copy_(stack.actnorm_log_scale[0, index, 0])
            layer.actnorm_bias.copy_(stack.actnorm_bias[0, index, 0])
        return flow


def hand_train(flow, X_train, X_val=None, *, epochs, batch_size=128, learning_rate=1e-3,
               weight_decay=1e-5, max_grad_norm=5.0, batch_seed=0):
    """Train ``flow`` for ``epochs`` epochs; returns the per-epoch mean train NLL.

    With ``X_val`` the mean validation log-likelihood is also computed after
    every epoch (what early stopping needs), otherwise not at all.
    """
    X_train = torch.as_tensor(X_train, dtype=torch.get_default_dtype())
    if X_val is not None:
        X_val = torch.as_tensor(X_val, dtype=torch.get_default_dtype())
    n_train = X_train.shape[0]
    batch_size = min(batch_size, n_train)
    optimizer = torch.optim.AdamW(flow.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(batch_seed)
    losses, scores = [], []
    for _ in range(epochs):
        flow.train()
        order = torch.randperm(n_train, generator=generator)
        total = torch.zeros(())
        for begin in range(0, n_train - batch_size + 1, batch_size):
            loss = -flow.log_prob(X_train[order[begin : begin + batch_size]]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), max_grad_norm)
            optimizer.step()
            total += loss.detach()
        losses.append(float(total) / (n_train // batch_size))
        if X_val is not None:
            flow.eval()
            with torch.no_grad():
                scores.append(float(flow.log_prob(X_val).mean()))
    return np.array(losses), np.array(scores)
