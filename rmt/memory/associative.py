"""ARMT's associative rule: the read and the delta-rule write of one layer's memory (A, z).

Written once for both of ARMT's schedules: the sequential loop (``kinds/armt.py``) passes one
layer's weights (H, d) and state (batch, heads, ...); diagonal batching (``diagonal.py``) passes a
group of layers, weights (G, H, d), and a leading group dim on everything else. The formulas are
in ``kinds/armt.py``'s docstring.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

EPS = 1e-5  # keeps the read's denominator away from 0 (a fresh state has z = 0)


def dpfp(x: torch.Tensor, nu: int) -> torch.Tensor:
    """Deterministic parameter-free projection: (..., d) -> (..., 2 * nu * d), non-negative."""
    x = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([x * x.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., T, H) @ weight: one layer's (H, d), or a group's (G, H, d) for x (G, ..., T, H).

    The group case is one batched matmul over (G, everything else, H): per group item it is the
    same product as the one-layer case, so both schedules round alike."""
    if weight.dim() == 2:
        return x @ weight
    return torch.bmm(x.reshape(weight.shape[0], -1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[-1])


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., T, d) -> (..., heads, T, d / heads)."""
    return x.unflatten(-1, (heads, -1)).transpose(-2, -3)


def keys(h: torch.Tensor, weight: torch.Tensor, heads: int, nu: int) -> torch.Tensor:
    """φ(h W), L2-normalised per head: (..., T, H) -> (..., heads, T, key_dim)."""
    return F.normalize(dpfp(_heads(_linear(h, weight), heads), nu), dim=-1)


def associative_read(h, A, z, w_query, heads: int, nu: int) -> torch.Tensor:
    """What the memory returns for every position of ``h`` (..., T, H): A φ(q) / (z · φ(q) + eps)."""
    q = keys(h, w_query, heads, nu)
    value = (q @ A) / (q @ z.unsqueeze(-1) + EPS)
    return value.transpose(-2, -3).flatten(-2)


def associative_write(o, A, z, w_key, w_value, w_gate, b_gate, heads: int, nu: int):
    """The write rule: ``o`` (..., m, H) are the layer's outputs at the memory tokens; returns the new (A, z)."""
    k = keys(o, w_key, heads, nu)                                       # (..., heads, m, key_dim)
    v = _heads(_linear(o, w_value), heads)                              # (..., heads, m, value_dim)
    beta = torch.sigmoid(_linear(o, w_gate) + b_gate).transpose(-1, -2)[..., None]  # (..., heads, m, 1)
    kz = k @ z.unsqueeze(-1)                                            # (..., heads, m, 1)
    previous = (k @ A) / (kz + EPS)
    A = A + k.transpose(-1, -2) @ ((v - previous) * beta)
    # φ(k) has unit norm, so the paper's γ = 1 - z·φ(k) / |φ(k)|² is 1 - z·φ(k).
    gamma = (1 - kz).clamp(0, 1).detach()
    z = z + (gamma * k).sum(dim=-2)
    return A, z
