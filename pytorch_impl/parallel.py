"""Data parallel in PyTorch: ``DistributedDataParallel``, one process per replica (gloo on CPU, NCCL on GPU).

DDP averages the gradients over the processes inside ``backward()`` (all-reduce in buckets, then / N), so
each process takes the mean loss of its own shard. BN statistics: ``nn.SyncBatchNorm`` with ``sync_bn``
(``AllReduceBatchNorm2d`` on CPU, below); otherwise each process normalises its shard and DDP broadcasts
rank 0's buffers at every forward, so the running statistics are rank 0's.
"""

from __future__ import annotations

import datetime
import os
import re
import warnings
from typing import ContextManager, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from shared.errors import ResNetParityError, one_line
from shared.parallel import TIMEOUT_S, cpu_cores, shard
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from . import train
from .resnet import build_model
from .weights import as_numpy, export_weights, import_weights, inputs, numerics


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch, for CPU: ``nn.SyncBatchNorm`` runs only on GPUs (its kernels,
    ``aten::batch_norm_stats``, have no CPU version). The mean and the two-pass biased variance go through
    torch's differentiable all-reduce, whose backward all-reduces the gradient; running statistics as
    SyncBatchNorm keeps them (unbiased with the global count)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        group = dist.group.WORLD
        n = x.numel() // x.shape[1] * dist.get_world_size()  # equal shards
        mean = funcol.all_reduce(x.sum((0, 2, 3)), "sum", group) / n
        centred = x - mean[None, :, None, None]
        var = funcol.all_reduce((centred * centred).sum((0, 2, 3)), "sum", group) / n
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var * (n / (n - 1)), alpha=self.momentum)
            self.num_batches_tracked.add_(1)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return centred * scale[None, :, None, None] + self.bias[None, :, None, None]


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d as AllReduceBatchNorm2d, statistics kept (``nn.SyncBatchNorm.convert_sync_batchnorm`` for CPU)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = AllReduceBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            synced.to(child.weight.dtype).load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            sync_batchnorm(child)
    return module


class DataParallel:
    BN_RUNNING_VAR = train.BN_RUNNING_VAR
    TRAINING_STATE_FILES = train.TRAINING_STATE_FILES

    def __init__(self, replicas: int, *, sync_bn: bool, device: str = "cpu", rank: int = 0, rendezvous: str | None = None,
                 timeout: float = TIMEOUT_S):
        self.replicas, self.sync_bn, self.rank, self.is_writer = replicas, sync_bn, rank, rank == 0
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", replicas))
        if device == "gpu":
            if local_rank >= torch.cuda.device_count():
                raise ResNetParityError(f"devices={replicas}: PyTorch sees {torch.cuda.device_count()} GPUs here")
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            # the processes share the host's cores; more threads than that only contend (as torchrun's OMP_NUM_THREADS=1)
            torch.set_num_threads(max(cpu_cores() // local, 1))
            self.device = torch.device("cpu")
        # a 1-channel stem kernel's gradient comes back with other (equivalent) strides than its bucket view;
        # DDP copies it and warns about speed at every step (this process is a replica: the filter is ours to set)
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # the process-group timeout bounds joining (the store) and every collective (torch's default: 30 minutes)
        dist.init_process_group("nccl" if device == "gpu" else "gloo", init_method=rendezvous or "env://",
                                rank=rank, world_size=replicas, timeout=datetime.timedelta(seconds=timeout))

    def numerics(self, dtype: str, device: str = "cpu") -> ContextManager[dict[str, str]]:
        return numerics(dtype, device)

    def build_model(self, spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> DDP:
        """The model wrapped in DDP, which first broadcasts rank 0's parameters and buffers."""
        model = build_model(spec_or_name, seed=seed, dtype=dtype).to(self.device)
        if self.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.device.type == "cuda" else sync_batchnorm(model)
        # rank 0's buffers at every forward: per-replica BN keeps rank 0's running statistics
        return DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None, forward_sync_buffers=True)

    def import_weights(self, model: DDP, weights: Mapping[str, np.ndarray]) -> None:
        import_weights(model.module, weights)

    def export_weights(self, model: DDP) -> dict[str, np.ndarray]:
        return export_weights(model.module)

    def make_optimizer(self, model: DDP, recipe: Recipe, total_steps: int) -> train.Optimizer:
        return train.make_optimizer(model.module, recipe, total_steps)

    def train_step(self, model: DDP, optimizer: train.Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe
                   ) -> tuple[float, np.ndarray]:
        """One step on this process's shard of the global batch; the global batch's loss and logits."""
        x, y = shard(x, self.rank, self.replicas), shard(y, self.rank, self.replicas)
        model.train()
        logits = model(inputs(model.module, x))
        loss = train._loss(logits, y, recipe)  # the shard's mean; DDP averages the gradients over the replicas
        optimizer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.optimizer.step()
        optimizer.scheduler.step()
        return self._whole_batch(loss.detach(), logits.detach())

    def gradients(self, model: DDP, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
        """The global batch's loss gradient as DDP averages it, canonical names (no weight decay)."""
        x, y = shard(x, self.rank, self.replicas), shard(y, self.rank, self.replicas)
        model.train()
        model.zero_grad(set_to_none=True)
        train._loss(model(inputs(model.module, x)), y, recipe).backward()
        grads = {name: as_numpy(p.grad) for name, p in model.module.named_parameters()}
        model.zero_grad(set_to_none=True)
        return grads

    def predict(self, model: DDP, x: np.ndarray, batch_size: int) -> np.ndarray:
        # the inner module: DDP's forward would enter a collective the other processes are not in
        return train.predict(model.module, x, batch_size)

    def save_training_state(self, directory: str, model: DDP, optimizer: train.Optimizer) -> None:
        train.save_training_state(directory, model.module, optimizer)

    def load_training_state(self, directory: str, model: DDP, optimizer: train.Optimizer) -> None:
        train.load_training_state(directory, model.module, optimizer)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        dist.destroy_process_group()

    def lost(self, exc: BaseException) -> str | None:
        # gloo reports a peer that died (its connection closed) or a collective past the timeout as a RuntimeError
        # naming its source file; NCCL's and the store's errors are DistError
        if isinstance(exc, dist.DistError) or (type(exc) is RuntimeError and "/gloo/" in str(exc)):
            return one_line(re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip()))  # without gloo's "[file.cc:553] "
        return None

    def _whole_batch(self, loss: torch.Tensor, logits: torch.Tensor) -> tuple[float, np.ndarray]:
        """Every shard's logits and the mean loss, for the progress bar and the parity check (not the update)."""
        parts = [torch.empty_like(logits) for _ in range(self.replicas)]
        dist.all_gather(parts, logits.contiguous())
        dist.all_reduce(loss)  # a sum: gloo has no average
        return loss.item() / self.replicas, as_numpy(torch.cat(parts))
