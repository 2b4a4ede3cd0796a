"""The argus models: FreesoundModel trains and runs the CNNs, StackingModel the MLPs.

Params are JSON-like, so a checkpoint is plain data: the project reads every .pth with
`weights_only=True` (`src.runs.read_checkpoint`), and argus.load_model can still read it:

    {"nn_module": ("AuxSkipAttention", {"num_classes": 80, ...}),
     "loss": ("OnlyNoisyLSoftLoss", {"beta": 0.7, ...}),
     "optimizer": ("Adam", {"lr": 0.0009}),
     "device": "cuda",
     "aux_weights": [1.0, 0.4, 0.2, 0.1],   # or None for single-output models
     "amp": "bf16",                         # "off", "fp16" (with GradScaler) or "bf16"
     "channels_last": False}

Mixed precision replaces the original's apex O2 with torch.amp: weights, BatchNorm and the
optimizer stay fp32, the forward pass runs under autocast, losses run in fp32, and fp16 uses a
dynamically scaled loss (GradScaler).
"""

from __future__ import annotations

from collections.abc import Callable

import argus
import torch
from argus.utils import deep_detach, deep_to
from torch import nn

from src.library_internals import check_predict_ready, plain_module
from src.models import MODELS
from src.models.fcnet import FCNet
from src.models.heads import backbone_modules, split_parameters
from src.models.losses import LOSSES, AuxWeightedLoss, BCEWithLogits

AMP_MODES = ("off", "fp16", "bf16")


def main_output(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The main head's logits: the first of (main, aux3, aux2, aux1), or the only output."""
    return output if isinstance(output, torch.Tensor) else output[0]


class MainSigmoid(nn.Module):
    """Prediction transform: probabilities of the main output, in fp32."""

    def forward(self, output) -> torch.Tensor:
        return torch.sigmoid(main_output(output).float())


def resolve_amp(amp: str, device: str | torch.device) -> str:
    """'auto' -> bf16 on GPUs that support it, fp16 on older GPUs, off on the CPU."""
    device = torch.device(device)
    if amp == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {(*AMP_MODES, 'auto')}, got {amp!r}")
    return amp


class FreesoundModel(argus.Model):
    nn_module = MODELS
    loss = LOSSES
    prediction_transform = MainSigmoid

    def __init__(self, params: dict) -> None:
        super().__init__(params)
        self.amp = resolve_amp(self.params.get("amp", "off"), self.device)
        self.params["amp"] = self.amp
        self.channels_last = bool(self.params.get("channels_last", False))
        if self.channels_last:
            self.nn_module = self.nn_module.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        # Optional (input, target, noisy) -> (input, target, noisy) on the device, e.g. the GPU
        # augmentation path; not part of params, so checkpoints stay plain data.
        self.batch_transform: Callable | None = None
        # Whether the backbone is frozen (a fine-tune's first epochs, `freeze_backbone`): its
        # BatchNorm layers then keep their running statistics while the heads train.
        self.backbone_frozen = False

    def build_optimizer(self, optimizer_meta, optim_params):
        """argus's optimizer, or with `backbone_lr_scale` in params (a fine-tune) two parameter
        groups: the heads at the optimizer's lr (first, the rate the logs show), the backbone at
        that share of it."""
        optimizer = super().build_optimizer(optimizer_meta, optim_params)
        scale = self.params.get("backbone_lr_scale")
        if scale is None:
            return optimizer
        backbone, heads = split_parameters(self.nn_module)
        lr = optimizer.defaults["lr"]
        groups = [{"params": heads}, {"params": backbone, "lr": lr * float(scale)}]
        return type(optimizer)(groups, **optimizer.defaults)

    def freeze_backbone(self, frozen: bool) -> None:
        """Train only the heads (`frozen`) or every weight again: the backbone's parameters
        stop or resume taking gradients (so its backward pass is skipped too)."""
        backbone, _ = split_parameters(self._plain_network())
        for parameter in backbone:
            parameter.requires_grad_(not frozen)
        self.backbone_frozen = frozen

    def _plain_network(self) -> nn.Module:
        return plain_module(self.get_nn_module())

    def train(self, mode: bool = True) -> None:
        # Always set: argus skips the call when the top module's flag already matches, which
        # would leave an unfrozen backbone in eval mode.
        self.nn_module.train(mode)
        if mode and self.backbone_frozen:
            for module in backbone_modules(self._plain_network()):
                module.eval()

    def build_loss(self, loss_meta, loss_params):
        loss = super().build_loss(loss_meta, loss_params)
        weights = self.params.get("aux_weights")
        return AuxWeightedLoss(loss, weights) if weights else loss

    def _autocast(self):
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp != "off")

    def _prepare(self, batch):
        input, target, noisy = deep_to(batch, device=self.device, non_blocking=True)
        if self.batch_transform is not None:
            input, target, noisy = self.batch_transform(input, target, noisy)
        if self.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        return input, target, noisy

    def train_step(self, batch, state) -> dict:
        self.train()
        self.optimizer.zero_grad(set_to_none=True)
        input, target, noisy = self._prepare(batch)
        with self._autocast():
            output = self.nn_module(input)
        loss = self.loss(output, target, noisy)  # fp32 inside, outside autocast
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {
            "prediction": self.prediction_transform(deep_detach(output)),
            "target": target.detach(),
            "loss": loss.item(),
        }

    def val_step(self, batch, state) -> dict:
        self.eval()
        with torch.no_grad():
            input, target, noisy = deep_to(batch, device=self.device, non_blocking=True)
            if self.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                output = self.nn_module(input)
            loss = self.loss(output, target, noisy)
            return {
                "prediction": self.prediction_transform(output),
                "target": target,
                "loss": loss.item(),
            }

    def predict(self, input: torch.Tensor) -> torch.Tensor:
        check_predict_ready(self)
        with torch.no_grad():
            self.eval()
            input = deep_to(input, self.device)
            if self.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                output = self.nn_module(input)
            return self.prediction_transform(output)

    def predict_with_embedding(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`predict` and the pooled features the main head sees (the network's `embed`), from
        one pass through the trunk: (probabilities, embeddings), both fp32."""
        check_predict_ready(self)
        network = plain_module(self.nn_module)
        with torch.no_grad():
            self.eval()
            input = deep_to(input, self.device)
            if self.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                embedding = network.embed(input)
                main = network.fc(embedding)
            return torch.sigmoid(main.float()), embedding.float()


def model_params(
    config: dict,
    num_classes: int,
    device: str = "cpu",
    amp: str = "off",
    channels_last: bool = False,
    in_channels: int | None = None,
) -> dict:
    """argus params of an experiment's network (sized to `num_classes`, and for a stacking MLP
    to its `in_channels`), loss and optimizer, as its configuration names them: the one builder
    of the params that training, import and every checkpoint record."""
    network = {**config["model"]["params"]}
    if config["kind"] == "stacking":
        if in_channels is None:
            raise ValueError("a stacking network needs in_channels")
        network["in_channels"] = in_channels
    network["num_classes"] = num_classes
    params = {
        "nn_module": (config["model"]["name"], network),
        "loss": (config["loss"]["name"], dict(config["loss"].get("params", {}))),
        "optimizer": (config["optimizer"]["name"], dict(config["optimizer"]["params"])),
        "device": device,
    }
    if config["kind"] == "cnn":
        params.update(
            aux_weights=config.get("aux_weights"),
            amp=amp,
            channels_last=channels_last,
            crop_size=int(config["crop_size"]),  # the predictor's tile width
        )
        finetune = config.get("finetune") or {}
        if finetune.get("init_from") is not None:
            params["backbone_lr_scale"] = float(finetune["backbone_lr_scale"])
    return params


class StackingModel(argus.Model):
    """argus's default steps on (mean tile probabilities, target), sigmoid output, fp32."""

    nn_module = {"FCNet": FCNet}
    loss = {"BCEWithLogits": BCEWithLogits}
    prediction_transform = nn.Sigmoid
