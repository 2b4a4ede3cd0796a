"""AuxSkipAttention: SkipAttention plus one auxiliary head per skip branch.

See docs/original.md, "Architectures".
"""

import torch

from src.models.blocks import AuxBlock
from src.models.skip_attention import SKIP_WIDTH, SkipAttention


class AuxSkipAttention(SkipAttention):
    """Returns (main, aux3, aux2, aux1), each (B, num_classes): the deepest auxiliary head
    comes first after the main output, as in the original, which is the order the loss weights
    follow.
    """

    def __init__(
        self,
        num_classes: int,
        base_size: int = 64,
        dropout: float = 0.2,
        ratio: int = 16,
        kernel_size: int = 7,
        last_filters: int = 8,
        last_fc: int = 2,
        head: str = "mlp",
    ) -> None:
        super().__init__(
            num_classes, base_size, dropout, ratio, kernel_size, last_filters, last_fc, head
        )
        skip_channels, hidden = base_size * SKIP_WIDTH, base_size * last_fc
        self.aux1 = AuxBlock(skip_channels, hidden, num_classes, dropout)
        self.aux2 = AuxBlock(skip_channels, hidden, num_classes, dropout)
        self.aux3 = AuxBlock(skip_channels, hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        merged, (skip1, skip2, skip3) = self.features(x)
        main = self.fc(self.pool(merged))
        return main, self.aux3(skip3), self.aux2(skip2), self.aux1(skip1)
