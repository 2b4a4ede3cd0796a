"""Building blocks shared by the three skip-attention CNNs (docs/original.md,
"Architectures").

Attribute names are part of the contract: they make the state-dict keys match the original's
layout, so that its released weights load into these modules.
"""

import torch
import torch.nn.functional as F
from torch import nn

SPATIAL_KERNEL_SIZES = (3, 7)


def _conv3x3_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Keys `0` (conv) and `1` (bn), as in the original's ConvBlock."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, then 2x2 average pooling (halves height and width)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3_bn_relu(in_channels, out_channels)
        self.conv2 = _conv3x3_bn_relu(out_channels, out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # As in the original, only ConvBlocks get this initialisation; every other layer keeps
        # PyTorch's.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv2(self.conv1(x)), kernel_size=2)


class SkipBlock(nn.Module):
    """Optional average pooling by `scale_factor` (when >= 2), then 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 1) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor >= 2:
            x = F.avg_pool2d(x, kernel_size=self.scale_factor)
        return F.relu(self.bn(self.conv(x)), inplace=True)


class ChannelAttention(nn.Module):
    """Per-channel gate (B, C, 1, 1) from global avg- and max-pooling through one shared MLP."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // ratio, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // ratio, channels, kernel_size=1, bias=False)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self._mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self._mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """Per-position gate (B, 1, H, W) from the channel mean and max, in that order."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size not in SPATIAL_KERNEL_SIZES:
            raise ValueError(
                f"SpatialAttention kernel_size must be one of {SPATIAL_KERNEL_SIZES}, "
                f"got {kernel_size}"
            )
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        peak = x.amax(dim=1, keepdim=True)
        return torch.sigmoid(self.conv1(torch.cat([mean, peak], dim=1)))


class ConvolutionalBlockAttentionModule(nn.Module):
    """CBAM: channel gate, then spatial gate, each multiplied into the features."""

    def __init__(self, channels: int, ratio: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.ca = ChannelAttention(channels, ratio)
        self.sa = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ca(x) * x
        return self.sa(x) * x


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C)."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def classifier_head(
    in_features: int, hidden_features: int, num_classes: int, dropout: float
) -> nn.Sequential:
    """Dropout -> Linear -> PReLU -> BN1d -> Dropout(p/2) -> Linear.

    Used for the main output and every auxiliary output. PReLU before the BN is faithful to
    the original; the indices 1, 2, 3, 5 are the original's state-dict keys.
    """
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden_features),
        nn.PReLU(),
        nn.BatchNorm1d(hidden_features),
        nn.Dropout(dropout / 2),
        nn.Linear(hidden_features, num_classes),
    )


class AuxBlock(nn.Module):
    """Auxiliary classifier on a skip feature map: global average pooling + the shared head."""

    def __init__(
        self, in_features: int, hidden_features: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.fc = classifier_head(in_features, hidden_features, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg_pool(x))
