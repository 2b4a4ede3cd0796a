"""StackingModel: argus's default steps on (mean tile probabilities, target), sigmoid output."""

import argus
from torch import nn

from src.losses import BCEWithLogits
from src.stacking.models import FCNet


class StackingModel(argus.Model):
    nn_module = {"FCNet": FCNet}
    loss = {"BCEWithLogits": BCEWithLogits}
    prediction_transform = nn.Sigmoid
