"""Exponential moving average of the trainable weights (TRM's `ema=True`), kept in the checkpoint.

After every optimizer step: shadow ← (1 − rate)·param + rate·shadow, with the official code's arithmetic
(two products, then their sum: no fused multiply-add), so a run and its resume stay bitwise equal.
Evaluation runs on the averaged weights (`swapped_in`) and training continues on the raw ones.
Buffers (the puzzle embedding table, H_init/L_init) are not averaged, as in the official code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, rate: float) -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"train.ema_rate must be in (0, 1), got {rate}")
        self.rate = rate
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                shadow = self.shadow[name]
                shadow.mul_(self.rate).add_((1.0 - self.rate) * param)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged weights for the duration; its own weights restored exactly after."""
        params = dict(model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, s in self.shadow.items():
                params[n].copy_(s)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, s in saved.items():
                    params[n].copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: s.detach().cpu() for n, s in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        extra = sorted(set(state) - set(self.shadow))
        if missing or extra:
            raise ValueError(f"EMA state does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
        for n, s in self.shadow.items():
            if state[n].shape != s.shape:
                raise ValueError(f"EMA state {n}: shape {tuple(state[n].shape)}, model has {tuple(s.shape)}")
            s.copy_(state[n])
