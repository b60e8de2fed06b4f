"""Colour maths shared by the model, the emulator and the evaluation.

All functions take NumPy arrays or torch tensors (same type out as in) with
values in [0, 1] unless stated; channels last for arrays ``(..., 3)``.
"""

from __future__ import annotations

import numpy as np
import torch

# Rec. 709 / sRGB luminance weights (linear RGB -> Y).
LUMA_709 = (0.2126, 0.7152, 0.0722)


def srgb_to_linear(x):
    """Inverse sRGB transfer function (IEC 61966-2-1), values in [0, 1]."""
    if isinstance(x, torch.Tensor):
        return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x):
    """sRGB transfer function (IEC 61966-2-1); input clipped to [0, 1]."""
    if isinstance(x, torch.Tensor):
        x = x.clamp(0.0, 1.0)
        return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.maximum(x, 1e-12) ** (1 / 2.4) - 0.055).astype(np.float32)
