"""RnnAuxSkipAttention: AuxSkipAttention whose main summary is a BiLSTM over time.

See docs/original.md, "Architectures".
"""

import torch
from torch import nn

from src.models.aux_skip_attention import AuxSkipAttention


class BidirectionalLSTM(nn.Module):
    """One bidirectional LSTM layer, then a per-timestep Linear(2*hidden -> out).

    Takes and returns batch-first sequences (B, T, C). The original ran the LSTM
    sequence-first; the layout changes neither the weights nor the results.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)
        self.embedding = nn.Linear(hidden_size * 2, output_size)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        recurrent, _ = self.rnn(sequence)
        return self.embedding(recurrent)


class RnnAuxSkipAttention(AuxSkipAttention):
    """Same trunk, heads and output order (main, aux3, aux2, aux1) as AuxSkipAttention; the main
    head reads the time-mean of a BiLSTM run over the frequency-mean of the merged map instead
    of a global average.

    The spec gives no key names for the recurrent part; ours are `lstm.rnn` (the nn.LSTM) and
    `lstm.embedding` (the Linear). Every width is base_size*last_filters (512 at full size).
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
        width = base_size * last_filters
        self.lstm = BidirectionalLSTM(width, width, width)

    def pool(self, merged: torch.Tensor) -> torch.Tensor:
        sequence = merged.mean(dim=2).transpose(1, 2)  # (B, C, F, T) -> (B, T, C)
        return self.lstm(sequence).mean(dim=1)
