"""Batch augmentation on the device: random crop with padding, horizontal flip, cutout (DARTS recipe)."""

from __future__ import annotations

import torch
from torch import Tensor


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Zero-pad [N, C, H, W] by ``padding`` and crop back to H x W at a random offset per example."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def random_flip(x: Tensor) -> Tensor:
    """Flip each example horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def cutout(x: Tensor, length: int) -> Tensor:
    """Zero a ``length`` x ``length`` square (clipped at the border) at a random centre per example."""
    if length <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device) - length // 2
    cx = torch.randint(0, w, (n, 1, 1), device=x.device) - length // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy) & (ys < cy + length) & (xs >= cx) & (xs < cx + length)
    return x.masked_fill(inside[:, None], 0.0)


def augment_batch(x: Tensor, crop_padding: int = 0, flip: bool = False, cutout_length: int = 0) -> Tensor:
    """The training augmentation of the retraining recipes, applied to a whole batch."""
    x = random_crop(x, crop_padding)
    if flip:
        x = random_flip(x)
    return cutout(x, cutout_length)
