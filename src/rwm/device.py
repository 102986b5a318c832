"""The torch device a setting names, checked against this machine."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device for `device`, or a ValueError saying what this machine lacks."""
    device = str(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' was requested but CUDA is not available here; use --device cpu.")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' does not exist; this machine has {torch.cuda.device_count()} GPU(s).")
        return dev
    return torch.device(device)
