"""Prototype speed-ups of the training loop, kept out of the package.

Used by ``bench_training.py --prototypes`` and ``bench_generation.py
--prototypes`` to quantify changes before anyone makes them in
``skflowsearch``. Nothing here is imported by the package.

:class:`PrototypeStack` is a :class:`~skflowsearch._nn.CouplingFlowStack`
(same parameters, initialisation and maths; its own forward pass) with
optional changes:

``index_per_layer``
    The *old* way, before commit 48f0f4b ("Unbind stacked parameters once
    per pass"): index ``weight[:, layer]`` inside the layer loop. Each such
    ``select`` has a backward that allocates a zero tensor of the *whole*
    stacked parameter (all layers), copies the layer's gradient into it, and
    autograd then adds the ``n_layers`` full-size tensors. Kept to measure
    what that commit bought; the default (False) unbinds every stacked
    parameter once per pass, as the package now does.
``fast_tanh``
    ``tanh(x)`` computed as ``2 * sigmoid(2 x) - 1`` (a custom autograd
    function whose backward is the usual ``1 - y**2``). This torch build's
    float32 CPU ``tanh`` kernel is several times slower than ``sigmoid``
    (``bench_generation.py --micro``); tanh is used by every hidden unit and
    by the soft clamp.
``contiguous_clamp``
    Soft-clamp a contiguous copy of the log-scale half of the conditioner
    output rather than the strided ``chunk`` view.

:func:`prototype_train` is a copy of :func:`skflowsearch._training.train_flows`
(same minibatches, per-epoch validation, early stopping, best-weights
restore, per-member clipping) with two optional changes to the step:
``fused_adamw`` (``torch.optim.AdamW(..., fused=True)``, one kernel per
parameter instead of about ten) and ``norm_clip`` (per-member norms with
``torch.linalg.vector_norm`` and the scaling with ``torch._foreach_mul_``).

With every option off, a prototype fit gives exactly the package's numbers.
"""

import time

import numpy as np
import torch

from skflowsearch._nn import CouplingFlowStack
from skflowsearch._training import TrainingResult, mean_log_prob
from skflowsearch._transforms import actnorm_forward, affine_coupling_forward


class _SigmoidTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(2.0 * x).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def sigmoid_tanh(x):
    """``tanh`` through the (vectorized) sigmoid kernel."""
    return _SigmoidTanh.apply(x)


class PrototypeStack(CouplingFlowStack):
    """``CouplingFlowStack`` with the optional changes described above.

    Only the parameters, their initialisation, ``_broadcast`` and
    ``log_prob`` come from the package class; the forward pass and the
    ActNorm initialisation are this class's own, so it does not depend on the
    package's private helpers.
    """

    def __init__(self, masks, hidden_layer_sizes, seeds, *, index_per_layer=False,
                 fast_tanh=False, contiguous_clamp=False, **kwargs):
        super().__init__(masks, hidden_layer_sizes, seeds, **kwargs)
        self.index_per_layer = index_per_layer
        self.tanh = sigmoid_tanh if fast_tanh else torch.tanh
        self.contiguous_clamp = contiguous_clamp

    def _layers(self):
        """``(weights, biases, actnorm or None, mask)`` of every coupling layer."""
        if self.index_per_layer:
            return [
                ([w[:, layer] for w in self.weights], [b[:, layer] for b in self.biases],
                 (self.actnorm_log_scale[:, layer], self.actnorm_bias[:, layer])
                 if self.actnorm else None,
                 self.masks[:, layer])
                for layer in range(self.n_layers)
            ]
        weights = zip(*(w.unbind(1) for w in self.weights))
        biases = zip(*(b.unbind(1) for b in self.biases))
        if self.actnorm:
            act = zip(self.actnorm_log_scale.unbind(1), self.actnorm_bias.unbind(1))
        else:
            act = [None] * self.n_layers
        return list(zip(weights, biases, act, self.masks.unbind(1)))

    def _proto_conditioner(self, h, weights, biases):
        last = len(weights) - 1
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(bias, h, weight)
            if i < last:
                h = self.tanh(h)
        n = h.shape[-1] // 2
        if self.contiguous_clamp:
            log_scale, shift = h[..., :n].contiguous(), h[..., n:]
        else:
            log_scale, shift = h.chunk(2, dim=-1)
        bound = self.max_log_scale
        return bound * self.tanh(log_scale / bound), shift

    def forward(self, x):
        x = self._broadcast(x)
        log_det = x.new_zeros(x.shape[:-1])
        for weights, biases, act, mask in self._layers():
            if act is not None:
                x, ld = actnorm_forward(x, *act)
                log_det = log_det + ld
            mask = mask.unsqueeze(1)
            log_scale, shift = self._proto_conditioner(x * mask, weights, biases)
            x, ld = affine_coupling_forward(x, mask, log_scale, shift)
            log_det = log_det + ld
        return x, log_det

    @torch.no_grad()
    def initialize_actnorm(self, x):
        if bool(self.actnorm_initialized):
            return
        x = self._broadcast(x)
        for layer in range(self.n_layers):
            mean = x.mean(dim=1, keepdim=True)
            std = x.std(dim=1, keepdim=True).clamp_min(1e-6)
            self.actnorm_log_scale[:, layer] = -torch.log(std)
            self.actnorm_bias[:, layer] = -mean / std
            x, _ = actnorm_forward(x, self.actnorm_log_scale[:, layer], self.actnorm_bias[:, layer])
            mask = self.masks[:, layer].unsqueeze(1)
            weights = [w[:, layer] for w in self.weights]
            biases = [b[:, layer] for b in self.biases]
            log_scale, shift = self._proto_conditioner(x * mask, weights, biases)
            x, _ = affine_coupling_forward(x, mask, log_scale, shift)
        self.actnorm_initialized.fill_(True)


def _clip_per_member(grads, max_norm, norm_clip):
    if norm_clip:
        squared = sum(torch.linalg.vector_norm(g.flatten(1), dim=1).square() for g in grads)
        scale = (max_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [scale.view(-1, *([1] * (g.dim() - 1))) for g in grads])
        return
    squared = sum(g.pow(2).flatten(1).sum(dim=1) for g in grads)
    scale = (max_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def prototype_fit(masks, X_train, X_val, *, seeds, batch_seed, config, index_per_layer=False,
                  fast_tanh=False, contiguous_clamp=False, fused_adamw=False, norm_clip=False):
    """``fit_flows`` on the CPU with the prototype changes switched on or off."""
    module = PrototypeStack(
        torch.as_tensor(np.asarray(masks, dtype=bool)), config.hidden_layer_sizes, seeds,
        actnorm=config.actnorm, max_log_scale=config.max_log_scale,
        index_per_layer=index_per_layer, fast_tanh=fast_tanh, contiguous_clamp=contiguous_clamp,
    )
    return prototype_train(module, X_train, X_val, config=config, batch_seed=batch_seed,
                           fused_adamw=fused_adamw, norm_clip=norm_clip)


def prototype_train(module, X_train, X_val, *, config, batch_seed, fused_adamw=False,
                    norm_clip=False):
    """Copy of ``train_flows`` (CPU only) with the optional step changes."""
    start_time = time.perf_counter()
    dtype = module.masks.dtype
    X_train = torch.tensor(np.asarray(X_train), dtype=dtype)
    X_val = torch.tensor(np.asarray(X_val), dtype=dtype)
    n_train, n_members = X_train.shape[0], module.n_members
    batch_size = min(int(config.batch_size), n_train)
    module.initialize_actnorm(X_train[:4096])
    parameters = list(module.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate,
                                  weight_decay=config.weight_decay,
                                  **({"fused": True} if fused_adamw else {}))
    generator = torch.Generator().manual_seed(int(batch_seed))
    with torch.no_grad():
        best_score = mean_log_prob(module, X_val)
    best_state = {k: v.clone() for k, v in module.state_dict().items()}
    active = torch.isfinite(best_score)
    diverged = ~active
    best_score = torch.where(active, best_score, torch.full_like(best_score, -torch.inf))
    best_epoch = torch.zeros(n_members, dtype=torch.long)
    n_epochs = torch.zeros(n_members, dtype=torch.long)
    train_losses, val_scores = [], [best_score.numpy().copy()]
    for epoch in range(1, config.max_epochs + 1):
        if not bool(active.any()):
            break
        module.train()
        order = torch.randperm(n_train, generator=generator)
        epoch_loss = torch.zeros(n_members, dtype=dtype)
        for begin in range(0, n_train - batch_size + 1, batch_size):
            batch = X_train[order[begin : begin + batch_size]]
            loss = -module.log_prob(batch).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            _clip_per_member([p.grad for p in parameters if p.grad is not None],
                             config.max_grad_norm, norm_clip)
            optimizer.step()
            epoch_loss += loss.detach()
        epoch_loss /= n_train // batch_size
        module.eval()
        with torch.no_grad():
            score = mean_log_prob(module, X_val)
        blew_up = active & ~(torch.isfinite(epoch_loss) & torch.isfinite(score))
        diverged |= blew_up
        n_epochs += active.long()
        was_active = active.clone()
        active &= ~blew_up
        improved = active & (score > best_score + config.tol)
        if bool(improved.any()):
            for name, tensor in module.state_dict().items():
                if tensor.dim() > 0:
                    best_state[name][improved] = tensor[improved]
            best_score = torch.where(improved, score, best_score)
            best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        active &= (epoch - best_epoch) < config.n_iter_no_change
        nan = torch.full_like(score, torch.nan)
        train_losses.append(torch.where(was_active, epoch_loss, nan).numpy().copy())
        val_scores.append(torch.where(was_active, score, nan).numpy().copy())
    module.load_state_dict(best_state)
    module.eval()
    return TrainingResult(
        module=module,
        train_loss=np.array(train_losses).reshape(-1, n_members),
        validation_score=np.array(val_scores),
        best_validation_score=best_score.numpy(),
        best_epoch=best_epoch.numpy(),
        n_epochs=n_epochs.numpy(),
        diverged=diverged.numpy(),
        seconds=time.perf_counter() - start_time,
    )


#: Named prototype configurations: the old per-layer indexing (to measure
#: what unbinding bought), each new change alone, then all new changes.
PROTOTYPES = {
    "index_per_layer (old)": dict(index_per_layer=True),
    "fast_tanh": dict(fast_tanh=True),
    "contiguous_clamp": dict(contiguous_clamp=True),
    "fused_adamw": dict(fused_adamw=True),
    "norm_clip": dict(norm_clip=True),
    "all four new": dict(fast_tanh=True, contiguous_clamp=True, fused_adamw=True, norm_clip=True),
}
