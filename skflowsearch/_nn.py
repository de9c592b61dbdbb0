"""The network: a population of masked coupling flows in one module.

:class:`CouplingFlowStack` holds ``n_members`` independent flows of the same
maximum depth and widths that differ in their masks, weights, and in which
layers and hidden units are live (an inactive layer is the identity, a
masked hidden unit outputs zero), so candidates of different sizes train in
one stack (inactive layers and masked units are still computed, at the size
of the largest member). Every parameter carries the member index as its leading dimension and the
conditioners run as batched matrix products, so a whole population trains as
one model: the members' losses are summed, and as no operation mixes members,
each one's gradients are exactly those it would get alone. A single flow is the
case ``n_members == 1``.

The elementwise map of the transformed features is the stack's *bijection*
(:mod:`skflowsearch._bijections`): the conditioners output its parameters,
and the stack knows nothing else of it.
"""

import math

import torch
from torch import nn

from ._bases import ProductBase, make_base
from ._bijections import Affine
from ._transforms import affine_forward, affine_inverse


class CouplingFlowStack(nn.Module):
    """``n_members`` coupling flows with a standard normal, Student t or Gaussian-mixture base.

    Parameters
    ----------
    masks : bool Tensor of shape (n_members, n_layers, n_features)
        True marks the conditioning features of each layer.
    hidden_layer_sizes : tuple of int
        Widths of the hidden layers of every conditioner MLP.
    seeds : sequence of int of length n_members
        Member ``i``'s weights are drawn from a generator seeded with
        ``seeds[i]`` alone, so a member starts from the same weights whatever
        population it is trained in.
    bijection : bijection of :mod:`skflowsearch._bijections`, default=Affine()
        The elementwise map each coupling applies to its transformed
        features, parameterized per row by the conditioner.
    actnorm : bool, default=True
        Put a learned per-feature affine layer before every coupling. It
        starts as the identity (the estimators hand the stack normalized
        rows), so that an untrained stack is exactly its base distribution.
    layer_active : bool Tensor of shape (n_members, n_layers), optional
        False makes a layer of a member the identity (its coupling and its
        ActNorm), so members of one stack can differ in depth. All True by
        default.
    hidden_widths : int Tensor of shape (n_members, n_hidden_layers), optional
        Live units of each hidden layer of a member's conditioners (at most
        ``hidden_layer_sizes``); the other units are masked out, so members of
        one stack can differ in width. Full widths by default.
    base_df : float, default=inf
        Degrees of freedom of the base: ``inf`` is the standard normal, 1 or
        an even number a product of Student t (see
        :func:`~skflowsearch._transforms.base_log_prob`).
    base_mixture : :class:`~skflowsearch._bases.Mixture`, optional
        A Gaussian-mixture base instead (``base_df`` is then ignored); it is
        fixed, and shared by all members.

    Notes
    -----
    The last layer of each conditioner starts at zero, so every coupling
    starts as the identity (zero parameters are the identity of every
    bijection). Hidden units are tanh: bounded conditioners keep
    the log-scale and shift bounded far from the data, so the density's tails
    stay those of the base instead of being stretched by a linear extrapolation
    (ReLU conditioners gave held-out scores thousands of nats off on real
    tables).
    """

    def __init__(self, masks, hidden_layer_sizes, seeds, *, bijection=None, actnorm=True,
                 layer_active=None, hidden_widths=None, base_df=math.inf, base_mixture=None):
        super().__init__()
        # The base module (see skflowsearch._bases): log_prob, sample, to_normal.
        self.base = make_base(base_df, base_mixture)
        self.bijection = Affine() if bijection is None else bijection
        masks = torch.as_tensor(masks, dtype=torch.bool)
        n_members, n_layers, n_features = masks.shape
        if len(seeds) != n_members:
            raise ValueError(f"need one seed per member: {len(seeds)} != {n_members}")
        self.register_buffer("masks", masks.to(torch.get_default_dtype()))
        sizes = (n_features, *hidden_layer_sizes, self.bijection.n_params * n_features)
        # weights[i] maps sizes[i] -> sizes[i+1] for all members and layers at once.
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(n_members, n_layers, a, b)) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_members, n_layers, 1, b)) for b in sizes[1:]
        )
        self.actnorm = bool(actnorm)
        if self.actnorm:
            self.actnorm_log_scale = nn.Parameter(torch.zeros(n_members, n_layers, 1, n_features))
            self.actnorm_bias = nn.Parameter(torch.zeros(n_members, n_layers, 1, n_features))
        # Depth and width masks, as float factors; None when every member is full size.
        self.register_buffer("layer_gates", _layer_gates(layer_active, n_members, n_layers))
        for i, gates in enumerate(_unit_gates(hidden_widths, n_members, n_layers, hidden_layer_sizes)):
            self.register_buffer(f"unit_gates_{i}", gates)
        self.n_hidden = len(hidden_layer_sizes)
        # Fan-in of each weight matrix per member: its live units, as the flow
        # built at the member's real width would have.
        fan_in = torch.tensor([[n_features, *hidden_layer_sizes[:-1]]] * n_members, dtype=torch.float64)
        if hidden_widths is not None:
            fan_in[:, 1:] = torch.as_tensor(hidden_widths, dtype=torch.float64)[:, :-1]
        self._init_weights(seeds, fan_in)

    @property
    def base_df(self):
        """Degrees of freedom of a product base; ``inf`` for a normal or a mixture of normals."""
        return getattr(self.base, "df", math.inf)

    @property
    def n_members(self):
        return self.masks.shape[0]

    @property
    def n_layers(self):
        return self.masks.shape[1]

    @property
    def n_features(self):
        return self.masks.shape[2]

    @torch.no_grad()
    def _init_weights(self, seeds, fan_in):
        # nn.Linear's default scale; the output layer stays zero (identity flow).
        for member, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed))
            for i, (weight, bias) in enumerate(zip(self.weights[:-1], self.biases[:-1])):
                bound = 1.0 / math.sqrt(float(fan_in[member, i]))
                for tensor in (weight, bias):
                    values = torch.rand(tensor.shape[1:], generator=generator, dtype=tensor.dtype)
                    tensor[member] = (2.0 * values - 1.0) * bound

    def _per_layer(self):
        """``(weights, biases, actnorm, unchanged)`` of every coupling layer, ready for the pass.

        The conditioner parameters are prepared for :meth:`_conditioner`, for
        all layers at once (one operation per stacked tensor, not per layer):

        * masks act on the weights, not on the activations: the rows of the
          first weight for the non-conditioning features are zeroed (the MLP
          reads only the conditioning features), and so are the columns of
          the last layer for the conditioning features (whose log-scale and
          bijection parameters are then exactly zero);
        * the hidden units are tanh, evaluated as ``tanh(u) = 2 sigmoid(2 u) - 1``
          with the affine parts folded into the parameters: a hidden layer
          computes ``s' = sigmoid(2 (a W + b))`` and the next layer reads
          ``a = 2 s - 1`` through ``a W + b = 2 s W + (b - 1^T W)``. The
          conditioner is then a plain sigmoid MLP: one kernel per hidden unit
          forward and one backward, where torch's CPU ``tanh`` is several
          times slower.

        ``unchanged`` marks the features a layer passes through exactly: its
        conditioning features, and all of them in an inactive layer.

        Each tensor is then split along the layer dimension once: indexing
        ``w[:, layer]`` in every layer would make autograd zero-fill a
        whole-tensor gradient per layer.
        """
        weights, biases = list(self.weights), list(self.biases)
        free = self._free_features()
        unchanged = (free == 0).unbind(1)
        free = free.repeat(1, 1, 1, self.bijection.n_params)
        weights[0] = weights[0] * self.masks.unsqueeze(-1)
        weights[-1] = weights[-1] * free
        biases[-1] = biases[-1] * free
        for i in range(self.n_hidden):
            units = getattr(self, f"unit_gates_{i}")
            if units is not None:  # masked units output tanh(0) = 0
                weights[i] = weights[i] * units
                biases[i] = biases[i] * units
        last = len(weights) - 1
        for i in range(len(weights)):
            factor = 1.0
            if i > 0:  # the input is s = (a + 1) / 2
                biases[i] = biases[i] - weights[i].sum(dim=-2, keepdim=True)
                factor = 2.0
            if i < last:  # the output goes into sigmoid(2 u)
                biases[i] = 2.0 * biases[i]
                factor *= 2.0
            if factor != 1.0:
                weights[i] = factor * weights[i]
        weights = zip(*(w.unbind(1) for w in weights))
        biases = zip(*(b.unbind(1) for b in biases))
        if self.actnorm:
            actnorm = zip(*(p.unbind(1) for p in self._gated_actnorm()))
        else:
            actnorm = [None] * self.n_layers
        return list(zip(weights, biases, actnorm, unchanged))

    def _free_features(self):
        """1 where a layer transforms a feature, shape (n_members, n_layers, 1, n_features).

        0 on the conditioning features, and on every feature of an inactive layer.
        """
        free = (1.0 - self.masks).unsqueeze(2)
        if self.layer_gates is not None:  # an inactive layer is the identity
            free = free * self.layer_gates
        return free

    def _gated_actnorm(self):
        """ActNorm log-scales and biases, zero (the identity) in inactive layers."""
        if self.layer_gates is None:
            return self.actnorm_log_scale, self.actnorm_bias
        return self.actnorm_log_scale * self.layer_gates, self.actnorm_bias * self.layer_gates

    def _conditioner(self, h, weights, biases):
        """Bijection parameters of a coupling layer, shape (n_members, batch, n_params, n_features).

        They are exactly zero on the layer's conditioning features.
        """
        for weight, bias in zip(weights[:-1], biases[:-1]):
            h = torch.sigmoid(torch.baddbmm(bias, h, weight))
        params = torch.baddbmm(biases[-1], h, weights[-1])
        return params.unflatten(-1, (self.bijection.n_params, self.n_features))

    def _couple(self, x, weights, biases, unchanged, *, inverse):
        """One coupling: the bijection on the transformed features; returns ``(y, log_det)``.

        The features in ``unchanged`` pass through exactly: their parameters
        are zero, which some bijections map to the identity only up to
        rounding, and for those the layer passes them through itself.
        """
        params = self._conditioner(x, weights, biases)
        y, log_det = (self.bijection.inverse if inverse else self.bijection.forward)(x, params)
        if self.bijection.exact_at_zero:
            return y, log_det.sum(-1)
        return torch.where(unchanged, x, y), torch.where(unchanged, 0.0, log_det).sum(-1)

    def _broadcast(self, x):
        if x.dim() == 2:
            return x.unsqueeze(0).expand(self.n_members, -1, -1)
        return x

    def forward(self, x):
        """Map data to latent space.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features) or (n_members, batch, n_features)

        Returns
        -------
        z : Tensor of shape (n_members, batch, n_features)
        log_det : Tensor of shape (n_members, batch)
        """
        x = self._broadcast(x)
        log_det = x.new_zeros(x.shape[:-1])
        for weights, biases, actnorm, unchanged in self._per_layer():
            if actnorm is not None:
                x, ld = affine_forward(x, *actnorm)
                log_det = log_det + ld
            x, ld = self._couple(x, weights, biases, unchanged, inverse=False)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z):
        """Map latent points back to data space; returns ``(x, log_det)``."""
        z = self._broadcast(z)
        log_det = z.new_zeros(z.shape[:-1])
        for weights, biases, actnorm, unchanged in reversed(self._per_layer()):
            z, ld = self._couple(z, weights, biases, unchanged, inverse=True)
            log_det = log_det + ld
            if actnorm is not None:
                z, ld = affine_inverse(z, *actnorm)
                log_det = log_det + ld
        return z, log_det

    def log_prob(self, x):
        """Log-density of ``x`` under each member, shape (n_members, batch)."""
        z, log_det = self(x)
        return self.base.log_prob(z) + log_det

    def sample(self, n_samples, generator=None):
        """Draw ``n_samples`` points from each member, shape (n_members, n, n_features).

        The base noise is drawn on the CPU from ``generator`` so that samples do
        not depend on the device.
        """
        shape = (self.n_members, n_samples, self.n_features)
        z = self.base.sample(shape, generator, self.masks.dtype).to(self.masks.device)
        return self.inverse(z)[0]

    def __setstate__(self, state):
        # A stack pickled before the bijection was pluggable is affine, with its own bound.
        if "bijection" not in state:
            state["bijection"] = Affine(state.pop("max_log_scale", 3.0))
        # One pickled before the base was a module has a base_df (or, older, none: a normal).
        if "base" not in state.get("_modules", {}):
            state["_modules"]["base"] = ProductBase(state.pop("base_df", math.inf))
        super().__setstate__(state)

    @torch.no_grad()
    def n_live_parameters(self):
        """Parameters of each member that can change its density, int ndarray of shape (n_members,).

        Counted from the gates the pass applies, not from a formula: a weight
        is live when its input unit and its output unit are (the first layer
        reads the conditioning features, the last one writes the bijection's
        parameters of the transformed features, masked hidden units are
        dead) and its layer is active.
        """
        on = torch.ones(self.n_members, self.n_layers, dtype=torch.float64, device=self.masks.device)
        if self.layer_gates is not None:
            on = self.layer_gates.view(self.n_members, self.n_layers).double()
        units = [getattr(self, f"unit_gates_{i}") for i in range(self.n_hidden)]
        units = [torch.full_like(on, w.shape[-1]) if g is None else g.double().sum((-2, -1))
                 for g, w in zip(units, self.weights)]
        live_in = [self.masks.double().sum(-1), *units]
        live_out = [*units, self._free_features().double().sum((-2, -1)) * self.bijection.n_params]
        total = sum((a * b + b) * on for a, b in zip(live_in, live_out))
        if self.actnorm:
            total = total + 2 * self.n_features * on
        return total.sum(1).round().long().cpu().numpy()

    def member_tensors(self):
        """The state tensors that carry the member index first, by name.

        All but the base's (shared by the members) and scalars.
        """
        return {name: tensor for name, tensor in self.state_dict().items()
                if tensor.dim() > 0 and not name.startswith("base.")}

    def member_state(self, index):
        """State dict of members ``index`` (int or index tensor) as a new stack.

        The base's tensors are shared by all members and kept whole.
        """
        state = self.state_dict()
        state.update({name: tensor[index] for name, tensor in self.member_tensors().items()})
        return state

    @torch.no_grad()
    def assign_state(self, state):
        """Take every tensor of ``state``, whatever its member count.

        Unlike :meth:`load_state_dict` this may change the number of members.
        Parameters are replaced by new ones (autograd keeps the shape of a
        leaf it has seen), so an optimizer must be rebuilt afterwards.
        """
        parameters = dict(self.named_parameters())
        for name, value in state.items():
            owner, _, attribute = name.rpartition(".")
            module = self.get_submodule(owner)
            value = value.to(self.masks.device)
            if name in parameters:
                setattr(module, attribute, nn.Parameter(value.clone()))
            else:
                setattr(module, attribute, value.clone())


def _layer_gates(layer_active, n_members, n_layers):
    if layer_active is None:
        return None
    active = torch.as_tensor(layer_active, dtype=torch.bool)
    if active.shape != (n_members, n_layers):
        raise ValueError(f"layer_active must have shape {(n_members, n_layers)}; got {tuple(active.shape)}")
    if bool(active.all()):
        return None
    return active.to(torch.get_default_dtype()).view(n_members, n_layers, 1, 1)


def _unit_gates(hidden_widths, n_members, n_layers, hidden_layer_sizes):
    """One (n_members, n_layers, 1, width) 0/1 tensor per hidden layer, or None where all live."""
    if hidden_widths is None:
        return [None] * len(hidden_layer_sizes)
    widths = torch.as_tensor(hidden_widths, dtype=torch.long)
    if widths.shape != (n_members, len(hidden_layer_sizes)):
        raise ValueError(
            f"hidden_widths must have shape {(n_members, len(hidden_layer_sizes))}; got {tuple(widths.shape)}"
        )
    gates = []
    for i, size in enumerate(hidden_layer_sizes):
        if bool((widths[:, i] < 1).any()) or bool((widths[:, i] > size).any()):
            raise ValueError(f"hidden_widths[:, {i}] must be in [1, {size}]; got {widths[:, i].tolist()}")
        if bool((widths[:, i] == size).all()):
            gates.append(None)
            continue
        live = (torch.arange(size) < widths[:, i, None]).to(torch.get_default_dtype())
        gates.append(live.view(n_members, 1, 1, size).expand(n_members, n_layers, 1, size).contiguous())
    return gates
