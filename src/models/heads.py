"""The classification heads of the CNNs, and the backbone that is everything else.

The main head (`fc`) and the auxiliary heads (`aux1`..`aux3`, on the skip branches) are the
parts of a network that know the classes; their last Linear holds one row per class. What a
fine-tune rebuilds, trains first and gives its full learning rate is named here, once.
"""

from __future__ import annotations

from torch import nn

HEADS = ("fc", "aux1", "aux2", "aux3")  # top-level children that are classification heads


def is_head(name: str) -> bool:
    """Whether a parameter, buffer or module name (e.g. `aux2.fc.1.weight`) is in a head."""
    return name.split(".", 1)[0] in HEADS


def output_layers(network: nn.Module) -> list[str]:
    """The name of each head's last Linear (one row per class): `fc.5`, `aux3.fc.5`, ..."""
    names = []
    for head in HEADS:
        module = getattr(network, head, None)
        if module is None:
            continue
        linears = [name for name, child in module.named_modules() if isinstance(child, nn.Linear)]
        names.append(f"{head}.{linears[-1]}" if linears[-1] else head)  # a head that is a Linear
    return names


def split_parameters(network: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, heads): the network's parameters, the heads' apart."""
    backbone, heads = [], []
    for name, parameter in network.named_parameters():
        (heads if is_head(name) else backbone).append(parameter)
    return backbone, heads


def backbone_modules(network: nn.Module) -> list[nn.Module]:
    """The top-level children that are not heads (the trunk, attention, merge, a BiLSTM)."""
    return [child for name, child in network.named_children() if not is_head(name)]
