"""Training losses (docs/original.md, "Losses").

Every training loss is called `loss(logits, target, noisy)`: logits and target are (B, C),
`noisy` is a (B,) tensor of 0/1 flags (uint8 or bool), 1 for raw noisy clips. The per-part
losses LSoftLoss and LqLoss take `(logits, target)` only; NoisyCuratedLoss applies them to the
noisy part of a batch.

All losses compute in float32 with autocast disabled, whatever the logits' dtype: under CUDA
autocast `F.binary_cross_entropy` on probabilities refuses to run, and the original's apex O2
also handed fp32 outputs to its losses.
"""

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

_Forward = TypeVar("_Forward", bound=Callable[..., torch.Tensor])

LSOFT_MIN_PROBABILITY = 1e-7
LQ_EPSILON = 1e-7


def _in_float32(forward: _Forward) -> _Forward:
    """Run `forward(self, logits, target, ...)` on float32 copies with autocast off."""

    @functools.wraps(forward)
    def wrapper(self, logits: torch.Tensor, target: torch.Tensor, *args, **kwargs):
        with torch.autocast(logits.device.type, enabled=False):
            return forward(self, logits.float(), target.float(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _noisy_mask(noisy: torch.Tensor, batch_size: int) -> torch.Tensor:
    mask = noisy.reshape(-1).bool()
    if mask.numel() != batch_size:
        raise ValueError(f"expected {batch_size} noisy flags, got shape {tuple(noisy.shape)}")
    return mask


class BCEWithLogits(nn.Module):
    """Mean BCE-with-logits. Ignores `noisy`, so plain BCE has the common signature too."""

    @_in_float32
    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)


class LSoftLoss(nn.Module):
    """Lsoft: BCE against beta*y + (1-beta)*p, the soft target being a constant (no gradient).

    p is clamped to [1e-7, 1.0] as in the original: p may reach 1, and BCE then relies on
    PyTorch clamping log(0) to -100 (kept because it shapes the loss values; docs/original.md,
    quirk "Loss edge cases").
    """

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = beta

    @_in_float32
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.sigmoid(logits).clamp(LSOFT_MIN_PROBABILITY, 1.0)
        with torch.no_grad():
            soft_target = self.beta * target + (1.0 - self.beta) * probabilities
        return F.binary_cross_entropy(probabilities, soft_target)


class LqLoss(nn.Module):
    """Lq: mean of (1 - (p*y + 1e-7)^q) / q. Entries with y = 0 are constant."""

    def __init__(self, q: float = 0.5) -> None:
        super().__init__()
        self.q = q

    @_in_float32
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.sigmoid(logits)
        return ((1.0 - (probabilities * target + LQ_EPSILON) ** self.q) / self.q).mean()


class NoisyCuratedLoss(nn.Module):
    """One loss for the noisy part of the batch, another for the rest, each weighted by its
    share of the batch: nw * L_noisy * n_noisy/B + cw * L_curated * n_curated/B.
    An empty part contributes nothing.
    """

    def __init__(
        self,
        noisy_loss: nn.Module,
        curated_loss: nn.Module,
        noisy_weight: float = 0.5,
        curated_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.noisy_loss = noisy_loss
        self.curated_loss = curated_loss
        self.noisy_weight = noisy_weight
        self.curated_weight = curated_weight

    @_in_float32
    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        batch_size = logits.shape[0]
        if batch_size == 0:
            raise ValueError("NoisyCuratedLoss got an empty batch")
        is_noisy = _noisy_mask(noisy, batch_size).to(logits.device)
        parts = []
        for mask, loss, weight in (
            (is_noisy, self.noisy_loss, self.noisy_weight),
            (~is_noisy, self.curated_loss, self.curated_weight),
        ):
            count = int(mask.sum())  # one host sync per step, as the original's split
            if count:
                parts.append(weight * loss(logits[mask], target[mask]) * (count / batch_size))
        # At least one part is non-empty, so the sum is attached to the graph.
        return torch.stack(parts).sum()


class OnlyNoisyLSoftLoss(NoisyCuratedLoss):
    """Lsoft on noisy clips, plain BCE on curated ones (the loss of every ensemble run)."""

    def __init__(self, beta: float, noisy_weight: float = 0.5, curated_weight: float = 0.5) -> None:
        super().__init__(LSoftLoss(beta), BCEWithLogits(), noisy_weight, curated_weight)


class OnlyNoisyLqLoss(NoisyCuratedLoss):
    """Lq on noisy clips, plain BCE on curated ones."""

    def __init__(
        self, q: float = 0.5, noisy_weight: float = 0.5, curated_weight: float = 0.5
    ) -> None:
        super().__init__(LqLoss(q), BCEWithLogits(), noisy_weight, curated_weight)


class BCEMaxOutlierLoss(nn.Module):
    """Mean per-sample BCE-with-logits after dropping noisy samples whose loss exceeds
    alpha times the batch maximum.

    Deviation from the original (docs/original.md, quirk "Loss edge cases"): when every sample is
    dropped the original returns NaN; ours returns a zero attached to the graph, i.e. a batch with
    nothing to learn from.
    """

    def __init__(self, alpha: float = 0.8) -> None:
        super().__init__()
        self.alpha = alpha

    @_in_float32
    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        per_sample = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        per_sample = per_sample.mean(dim=1)
        is_noisy = _noisy_mask(noisy, per_sample.shape[0]).to(logits.device)
        with torch.no_grad():
            outlier = is_noisy & (per_sample > self.alpha * per_sample.max())
            keep = (~outlier).float()
        # A masked mean rather than indexing: no NaN on an empty selection, no host sync.
        return (per_sample * keep).sum() / keep.sum().clamp(min=1.0)


class AuxWeightedLoss(nn.Module):
    """Weighted sum of `loss` over a model's outputs, or `loss` itself on a single output.

    For the aux models the outputs are (main, aux3, aux2, aux1) and the ensemble weights
    are [1.0, 0.4, 0.2, 0.1], as in the original.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        if not weights:
            raise ValueError("AuxWeightedLoss needs at least one weight")
        self.loss = loss
        self.weights = tuple(float(weight) for weight in weights)

    def forward(
        self,
        output: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor,
        noisy: torch.Tensor,
    ) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self.loss(output, target, noisy)
        if len(output) != len(self.weights):
            raise ValueError(
                f"the model returned {len(output)} outputs but {len(self.weights)} "
                f"aux loss weights were given: {list(self.weights)}"
            )
        return sum(
            weight * self.loss(logits, target, noisy)
            for weight, logits in zip(self.weights, output, strict=True)
        )


LOSSES: dict[str, type[nn.Module]] = {
    "OnlyNoisyLSoftLoss": OnlyNoisyLSoftLoss,
    "OnlyNoisyLqLoss": OnlyNoisyLqLoss,
    "BCEMaxOutlierLoss": BCEMaxOutlierLoss,
    "BCEWithLogits": BCEWithLogits,
}
