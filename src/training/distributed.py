"""One fold on several processes: DistributedDataParallel under `torchrun`.

    torchrun --nproc_per_node 4 train_folds.py --experiment corr_noisy_007 --folds 0
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 train_folds.py --experiment corr_noisy_007

Each process trains on its share of every epoch (EpochSampler shards the sample numbers, so
all processes together draw exactly the samples of a single-process epoch, with the same global
batch size), validates its share of the validation clips, and the metrics are gathered so every
process sees the same val_lwlrap and takes the same scheduler and early-stopping decisions. Only
rank 0 writes checkpoints, logs and the resume state. The backend is NCCL on GPUs and gloo on the
CPU (which is how the tests run it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group that torchrun set up; pick this process's device."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return DistContext(rank, world, local_rank, device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_arrays(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's validation targets and predictions (metric `gather` hook)."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (truth, scores))
    return np.concatenate([t for t, _ in gathered]), np.concatenate([s for _, s in gathered])


def sum_across_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item())


def wrap_model(model, device: str, sync_batchnorm: bool = False) -> None:
    """Put the argus model's network under DDP (argus unwraps it to save checkpoints)."""
    module = model.get_nn_module()
    if sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device = torch.device(device)
    device_ids = [device.index or 0] if device.type == "cuda" else None
    model.nn_module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def rewrap_model(model) -> None:
    """A fresh DDP wrapper around the argus model's network, where it has one. DDP fixes the
    parameters it synchronises when it is built (those that take gradients), so a change of
    which ones do (a fine-tune's frozen backbone epochs) needs a new wrapper on every rank."""
    module = model.nn_module
    if isinstance(module, nn.parallel.DistributedDataParallel):
        model.nn_module = nn.parallel.DistributedDataParallel(
            module.module, device_ids=module.device_ids
        )


def shard_dataset(dataset, rank: int, world_size: int) -> Subset:
    """This rank's share of the validation clips: rank, rank + W, rank + 2W, ..."""
    return Subset(dataset, range(rank, len(dataset), world_size))


def distribute(parts, rank: int, world_size: int, device: str, sync_batchnorm: bool = False):
    """Turn a fold's parts into this rank's parts: DDP model, gathered metrics, rank 0 writes."""
    if world_size == 1:
        return parts
    wrap_model(parts.model, device, sync_batchnorm)
    for metric in parts.metrics:
        metric.gather = gather_arrays
    parts.is_main = rank == 0
    if not parts.is_main:
        parts.model.logger.setLevel(logging.WARNING)  # one copy of the epoch log is enough
    return parts
