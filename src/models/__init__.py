"""The CNNs of the ensemble, by the names experiments use for them."""

from torch import nn

from src.models.aux_skip_attention import AuxSkipAttention
from src.models.rnn_aux_skip_attention import RnnAuxSkipAttention
from src.models.skip_attention import SkipAttention

MODELS: dict[str, type[nn.Module]] = {
    "AuxSkipAttention": AuxSkipAttention,
    "RnnAuxSkipAttention": RnnAuxSkipAttention,
    "SkipAttention": SkipAttention,
}

__all__ = ["MODELS", "AuxSkipAttention", "RnnAuxSkipAttention", "SkipAttention"]
