"""Turning the ``device`` hyper-parameter into torch devices."""

import torch


def resolve_device(device):
    """Return the :class:`torch.device` for ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    ``"auto"`` picks the first CUDA device when one is available, else the CPU.

    Raises
    ------
    ValueError
        For an unknown spelling, or a CUDA device that is not available here.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}."
        ) from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}.")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} was requested but only {torch.cuda.device_count()} "
            "CUDA device(s) are visible."
        )
    return resolved


def resolve_devices(device):
    """Like :func:`resolve_device` but also accepts a list of devices.

    Returns
    -------
    list of torch.device
    """
    if isinstance(device, (list, tuple)):
        if not device:
            raise ValueError("device must not be an empty list.")
        return [resolve_device(d) for d in device]
    return [resolve_device(device)]
