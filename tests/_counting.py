"""The parameter count of a coupling flow by hand, for tests of ``n_live_parameters``.

Per coupling: the conditioner reads its ``c`` conditioning features and
writes ``n_params`` numbers for each of its ``t`` transformed features, so the
live weights are ``c h1 + h1`` (first layer), ``h_i h_{i+1} + h_{i+1}``
(hidden layers) and ``n_params t (h_last + 1)`` (output); ActNorm adds two
per feature and layer.
"""

import numpy as np


def hand_count(masks, hidden_layer_sizes, actnorm=True, n_params=2):
    masks = np.asarray(masks, dtype=bool)
    hidden = tuple(int(h) for h in hidden_layer_sizes)
    total = 0
    for row in masks:
        c, t = int(row.sum()), int((~row).sum())
        total += c * hidden[0] + hidden[0]
        total += sum(a * b + b for a, b in zip(hidden[:-1], hidden[1:]))
        total += n_params * t * (hidden[-1] + 1)
    if actnorm:
        total += 2 * masks.shape[0] * masks.shape[1]
    return total
