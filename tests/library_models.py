"""Other libraries' models with every tensor random at a realistic scale, BN statistics included (fresh ones hide a
swapped mean and variance): for the tests against the libraries and ``benchmarks/library_parity.py``."""

from __future__ import annotations

import numpy as np


def randomized(model, seed: int = 0):
    """A torch model (timm's, transformers', a seed's) with every float tensor of its state random; in eval mode."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if not t.is_floating_point():
                continue
            if leaf == "running_var" or (leaf == "weight" and t.ndim == 1):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif leaf in ("running_mean", "bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(np.prod(t.shape[1:])))
    return model.eval()


def keras_hub_classifier(keras_hub, num_classes: int = 10, seed: int = 0, **backbone):
    """A keras-hub ResNetImageClassifier on a ResNetBackbone(**backbone), every variable random."""
    model = keras_hub.models.ResNetImageClassifier(backbone=keras_hub.models.ResNetBackbone(**backbone),
                                                   num_classes=num_classes)
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape, leaf = tuple(var.shape), var.path.rsplit("/", 1)[-1]
        if leaf in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("beta", "moving_mean", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[:-1]))
        var.assign(value.astype(np.float32))
    return model


def flax_variables(model, x: np.ndarray, seed: int = 0) -> dict:
    """A linen model's variables ({'params', 'batch_stats'}) for input ``x``, every array random."""
    import jax

    rng = np.random.default_rng(seed)

    def random(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name in ("bias", "mean"):
            return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)
        return (rng.normal(0.0, 1.0, leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)

    return jax.tree_util.tree_map_with_path(random, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x)))
