"""Weight initialisation: JAX-style truncated normal (its *actual* std is σ) and LeCun normal.

The reference draws every tensor with this one routine, in module-construction order; keeping the same
ops in the same order makes the initial state bit-identical after the same `torch.manual_seed`.
"""

from __future__ import annotations

import math

import torch


def _truncated_variance(lower: float, upper: float) -> float:
    """Variance of a standard normal truncated to [lower, upper] (0.77374 for ±2)."""
    sqrt2 = math.sqrt(2.0)
    a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
    z = (b - a) / 2  # Φ(upper) − Φ(lower)
    c = (2 * math.pi) ** -0.5
    pdf_lower = c * math.exp(-0.5 * lower**2)
    pdf_upper = c * math.exp(-0.5 * upper**2)
    return 1 - (upper * pdf_upper - lower * pdf_lower) / z - ((pdf_upper - pdf_lower) / z) ** 2


def truncated_normal_scale(lower: float = -2.0, upper: float = 2.0) -> float:
    """Factor c such that N(0, (c·σ)²) truncated to [lower·c·σ, upper·c·σ] has std σ (≈1.13685 for ±2)."""
    return 1.0 / math.sqrt(_truncated_variance(lower, upper))


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill `tensor` in place by inverse-CDF sampling of a normal truncated at ±2 corrected std units.

    Sample v ~ U[erf(l/√2), erf(u/√2)], x = √2·σ_c·erfinv(v), clip to [l·σ_c, u·σ_c] (the clip only
    guards rounding). σ = 0 gives zeros and draws nothing from the RNG.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        comp_std = std / math.sqrt(_truncated_variance(lower, upper))  # σ_c
        tensor.uniform_(math.erf(lower / sqrt2), math.erf(upper / sqrt2))
        tensor.erfinv_()
        tensor.mul_(sqrt2 * comp_std)
        tensor.clip_(lower * comp_std, upper * comp_std)
    return tensor


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """LeCun init for a [out, in] linear weight: truncated normal with σ = 1/√fan_in."""
    return trunc_normal_(weight, std=1.0 / (weight.shape[1] ** 0.5))
