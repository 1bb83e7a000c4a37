"""The training step in PyTorch: ``model.train()``, ``loss.backward()``, ``torch.optim`` plus ``LambdaLR``.

PyTorch is the reference for ``shared.recipe``: SGD, Adam and their coupled L2 ``weight_decay``
are torch's own. BatchNorm keeps the *unbiased* batch variance in ``running_var``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from shared.recipe import OPTIMIZER_SLOTS, SGD, Convention, Recipe, lr_factor

from .resnet import ResNet
from .weights import as_numpy, inputs

BN_RUNNING_VAR: Convention = "unbiased"
TRAINING_STATE_FILES = ("model.pth", "optimizer.pth")


@dataclass
class Optimizer:
    """A torch optimizer and its scheduler, stepped together (Keras and optax fold the schedule in)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def make_optimizer(model: ResNet, recipe: Recipe, total_steps: int) -> Optimizer:
    """``recipe``'s optimizer over every parameter, with its schedule over ``total_steps`` steps."""
    opt = recipe.optimizer
    if isinstance(opt, SGD):
        optimizer = torch.optim.SGD(
            model.parameters(), lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov, weight_decay=opt.weight_decay,
        )
    else:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, weight_decay=opt.weight_decay,
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(recipe.schedule, step, total_steps))
    return Optimizer(optimizer, scheduler)


def _loss(logits: torch.Tensor, y: np.ndarray, recipe: Recipe) -> torch.Tensor:
    # mixed precision's float16/bfloat16 logits: the loss in float32, as autocast would compute it
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, torch.as_tensor(np.asarray(y), dtype=torch.long), label_smoothing=recipe.label_smoothing)


def train_step(model: ResNet, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[float, np.ndarray]:
    """One optimizer step on an NHWC batch; returns the loss and the train-mode logits (before the step)."""
    model.train()
    logits = model(inputs(model, x))
    loss = _loss(logits, y, recipe)
    optimizer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.optimizer.step()
    optimizer.scheduler.step()
    return loss.item(), as_numpy(logits.detach())


def gradients(model: ResNet, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
    """The loss gradient of every parameter in train mode, canonical names and layouts (no weight decay)."""
    model.train()
    model.zero_grad(set_to_none=True)
    _loss(model(inputs(model, x)), y, recipe).backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def apply_gradients(model: ResNet, optimizer: Optimizer, grads: Mapping[str, np.ndarray], recipe: Recipe) -> None:
    """One optimizer step with the given loss gradients (canonical names and layouts: the state_dict's)."""
    for name, p in model.named_parameters():
        p.grad = torch.tensor(np.asarray(grads[name]), dtype=p.dtype, device=p.device)
    optimizer.optimizer.step()
    optimizer.scheduler.step()
    optimizer.optimizer.zero_grad(set_to_none=True)


def predict(model: ResNet, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits for an NHWC array, computed batch by batch."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([as_numpy(model(inputs(model, x[i : i + batch_size]))) for i in range(0, len(x), batch_size)])


def _slots(optimizer: Optimizer) -> tuple[str, ...]:
    if isinstance(optimizer.optimizer, torch.optim.Adam):
        return OPTIMIZER_SLOTS["adam"]
    return OPTIMIZER_SLOTS["sgd"] if optimizer.optimizer.defaults["momentum"] else ()


def export_optimizer_state(model: ResNet, optimizer: Optimizer) -> dict[str, np.ndarray]:
    """``step`` and torch's own slots per parameter (``momentum_buffer``; Adam's ``exp_avg``, ``exp_avg_sq``), by
    state_dict key; a slot not created yet (before the first step) as the zeros it acts as."""
    state = {"step": np.array(optimizer.scheduler.last_epoch, np.int64)}
    for name, p in model.named_parameters():
        held = optimizer.optimizer.state.get(p, {})
        for slot in _slots(optimizer):
            value = held.get(slot)
            # a copy: the optimizer updates its buffers in place
            state[f"{slot}.{name}"] = (as_numpy(value).copy() if value is not None
                                       else np.zeros(p.shape, as_numpy(p.detach()).dtype))
    return state


def import_optimizer_state(model: ResNet, optimizer: Optimizer, state: Mapping[str, np.ndarray]) -> None:
    """Continue from ``state``: the slots, Adam's step count, and the schedule at step ``state['step']``."""
    step = int(state["step"])
    for name, p in model.named_parameters():
        held = optimizer.optimizer.state[p]
        for slot in _slots(optimizer):
            held[slot] = torch.tensor(np.asarray(state[f"{slot}.{name}"]), dtype=p.dtype, device=p.device)
        if isinstance(optimizer.optimizer, torch.optim.Adam):
            held["step"] = torch.tensor(float(step), dtype=torch.float32)
    scheduler = optimizer.scheduler
    scheduler.last_epoch = step
    for group, base, factor in zip(optimizer.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.optimizer.param_groups]


def save_training_state(directory: str, model: ResNet, optimizer: Optimizer) -> None:
    """The native checkpoint: the model's state_dict and the optimizer's plus scheduler's, as .pth."""
    torch.save(model.state_dict(), os.path.join(directory, "model.pth"))
    state = {"optimizer": optimizer.optimizer.state_dict(), "scheduler": optimizer.scheduler.state_dict()}
    torch.save(state, os.path.join(directory, "optimizer.pth"))


def load_training_state(directory: str, model: ResNet, optimizer: Optimizer) -> None:
    """Restore what ``save_training_state`` wrote, strictly."""
    model.load_state_dict(torch.load(os.path.join(directory, "model.pth"), weights_only=True))
    state = torch.load(os.path.join(directory, "optimizer.pth"), weights_only=True)
    optimizer.optimizer.load_state_dict(state["optimizer"])
    optimizer.scheduler.load_state_dict(state["scheduler"])
