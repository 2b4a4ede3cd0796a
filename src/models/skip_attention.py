"""SkipAttention: the shared trunk of all three architectures, with one output.

See docs/original.md, "Architectures".
"""

import torch
from torch import nn

from src.models.blocks import (
    ConvBlock,
    ConvolutionalBlockAttentionModule,
    SkipBlock,
    classifier_head,
    global_avg_pool,
)

# The three skip branches and conv4 all have this many channels, in units of base_size.
SKIP_WIDTH = 8


class SkipAttention(nn.Module):
    """Four ConvBlocks with three pooled skip branches, CBAM over their concatenation, a merge
    conv, global average pooling and the classifier head.

    Input (B, 3, H, W) with H and W divisible by 16; output logits (B, num_classes).
    Subclasses reuse the trunk through `features` and change the summary through `pool`.
    `head="linear"` makes the main head one Linear layer on the embedding (a linear probe's,
    train_probe.py) instead of the original's two-layer head.
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
        super().__init__()
        skip_channels = base_size * SKIP_WIDTH
        self.conv1 = ConvBlock(3, base_size)
        self.skip1 = SkipBlock(base_size, skip_channels, scale_factor=8)
        self.conv2 = ConvBlock(base_size, base_size * 2)
        self.skip2 = SkipBlock(base_size * 2, skip_channels, scale_factor=4)
        self.conv3 = ConvBlock(base_size * 2, base_size * 4)
        self.skip3 = SkipBlock(base_size * 4, skip_channels, scale_factor=2)
        self.conv4 = ConvBlock(base_size * 4, skip_channels)
        concat_channels = skip_channels * 4
        self.attention = ConvolutionalBlockAttentionModule(concat_channels, ratio, kernel_size)
        self.merge = SkipBlock(concat_channels, base_size * last_filters, scale_factor=1)
        if head == "linear":
            self.fc: nn.Module = nn.Linear(base_size * last_filters, num_classes)
        elif head == "mlp":
            self.fc = classifier_head(
                base_size * last_filters, base_size * last_fc, num_classes, dropout
            )
        else:
            raise ValueError(f"head must be 'mlp' or 'linear', got {head!r}")

    def features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The merged map (B, base_size*last_filters, H/16, W/16) and the skips (skip1..skip3)."""
        x = self.conv1(x)
        skip1 = self.skip1(x)
        x = self.conv2(x)
        skip2 = self.skip2(x)
        x = self.conv3(x)
        skip3 = self.skip3(x)
        x = self.conv4(x)
        # The original's concatenation order, which its weights depend on.
        x = torch.cat([x, skip1, skip2, skip3], dim=1)
        merged = self.merge(self.attention(x))
        return merged, (skip1, skip2, skip3)

    def pool(self, merged: torch.Tensor) -> torch.Tensor:
        """Summarise the merged map into one vector per clip (B, C)."""
        return global_avg_pool(merged)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the main classifier head sees (B, base_size*last_filters): a
        clip's embedding."""
        merged, _ = self.features(x)
        return self.pool(merged)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))
