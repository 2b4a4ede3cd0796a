"""FCNet, the stacking MLP (docs/original.md, "Stacking")."""

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcitation(nn.Module):
    """A sigmoid gate on the input features computed from the features themselves, through
    `features // reduction_scale` hidden units, at least one: with fewer inputs than
    `reduction_scale` (a stacking experiment over few classes or experiments) the division
    gives 0, a layer of no weights that never learns."""

    def __init__(self, features: int, reduction_scale: int) -> None:
        super().__init__()
        hidden = max(1, features // reduction_scale)
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x))))


class FCNet(nn.Module):
    """Gate -> Linear(in, 2*base) -> PReLU -> dropout -> Linear(2*base, base) -> PReLU ->
    dropout -> Linear(base, classes). No BatchNorm; PyTorch's default initialisation."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_size: int = 64,
        reduction_scale: int = 8,
        p_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.p_dropout = p_dropout
        self.gate = SqueezeExcitation(in_channels, reduction_scale)
        self.fc1 = nn.Linear(in_channels, base_size * 2)
        self.act1 = nn.PReLU()
        self.fc2 = nn.Linear(base_size * 2, base_size)
        self.act2 = nn.PReLU()
        self.fc3 = nn.Linear(base_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(x)
        x = F.dropout(self.act1(self.fc1(x)), self.p_dropout, self.training)
        x = F.dropout(self.act2(self.fc2(x)), self.p_dropout, self.training)
        return self.fc3(x)
