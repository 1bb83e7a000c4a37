"""keras.applications ResNet50/101/152 and ResNet50V2/101V2/152V2 <-> canonical weights.

The mapping is data: ``keras_applications_names(spec)`` names the keras.applications layer of
every canonical module, and ``PARAMS`` (shared with ``weights.py``) names each variable in that
layer and its layout. Keras 2 ``.h5`` files keep the same layer and variable names, so their
readers reuse both.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import keras
import numpy as np

from shared.spec import PRESETS, ResNetSpec, get_spec
from shared.weights import (
    WeightMismatchError, canonical_layers, canonical_shapes, check_weights, from_canonical, split_path, to_canonical,
)

from .weights import PARAMS

# Inside a block: canonical module -> keras.applications suffix. V1 names each BN after the conv
# it follows; V2 after the conv it precedes, so V2's bn1 is the block's pre-activation BN.
BLOCK_NAMES: dict[str, dict[str, str]] = {
    "v1": {
        "conv1": "1_conv", "bn1": "1_bn", "conv2": "2_conv", "bn2": "2_bn", "conv3": "3_conv", "bn3": "3_bn",
        "downsample.0": "0_conv", "downsample.1": "0_bn",
    },
    "v2": {
        "bn1": "preact_bn", "conv1": "1_conv", "bn2": "1_bn", "conv2": "2_conv", "bn3": "2_bn", "conv3": "3_conv",
        "downsample.0": "0_conv",
    },
}
# Outside the blocks (V1 has the stem BN, V2 the final BN instead).
TOP_NAMES: dict[str, str] = {"conv1": "conv1_conv", "bn1": "conv1_bn", "post_bn": "post_bn", "fc": "predictions"}

# Canonical key -> (keras variable path "layer/variable", permutation canonical -> Keras).
VariableTable = dict[str, tuple[str, tuple[int, ...] | None]]


def block_name(prefix: str) -> str:
    """'layer1.0' -> 'conv2_block1': keras.applications numbers stages after the stem (conv1), blocks from 1."""
    stage, index = split_path(prefix.removeprefix("layer"))
    return f"conv{stage + 1}_block{index + 1}"


def keras_applications_names(spec: ResNetSpec | str) -> dict[str, str]:
    """Canonical module path -> keras.applications layer name, for every weight-carrying layer of ``spec``."""
    spec = get_spec(spec)
    inside = BLOCK_NAMES["v2" if spec.preact else "v1"]
    blocks = {plan.prefix: block_name(plan.prefix) for plan in spec.blocks()}
    names = {}
    for layer in canonical_layers(spec):
        if layer.path in TOP_NAMES:
            names[layer.path] = TOP_NAMES[layer.path]
            continue
        parts = layer.path.split(".", 2)
        if len(parts) < 3 or parts[2] not in inside:
            raise ValueError(f"{spec.name}: keras.applications has no layer for {layer.path}")
        stage, index, module = parts
        names[layer.path] = f"{blocks[f'{stage}.{index}']}_{inside[module]}"
    return names


def variable_table(spec: ResNetSpec | str) -> VariableTable:
    """Canonical key -> (keras.applications variable 'layer/variable', permutation canonical -> Keras)."""
    spec = get_spec(spec)
    names = keras_applications_names(spec)
    table = {}
    for layer in canonical_layers(spec):
        for param in layer.shapes:
            attr, perm = PARAMS[layer.kind][param]
            table[f"{layer.path}.{param}"] = (f"{names[layer.path]}/{attr}", perm)
    return table


def keras_applications_preset(variable_paths: Iterable[str]) -> str:
    """The preset whose keras.applications variables are exactly these 'layer/variable' paths."""
    paths = set(variable_paths)
    for name, spec in PRESETS.items():
        try:
            table = variable_table(spec)
        except ValueError:  # a preset with layers keras.applications has no names for
            continue
        found = {path for path, _ in table.values()}
        # include_top=False: the same model without its classifier
        if paths in (found, found - {"predictions/kernel", "predictions/bias"}):
            return name
    raise ValueError("no preset has exactly these keras.applications layers; pass spec= to see what differs")


def model_variables(kapp_model: keras.Model) -> dict[str, keras.Variable]:
    """'layer/variable' -> variable, for every weight of a keras.applications model."""
    return {f"{layer.name}/{var.name}": var for layer in kapp_model.layers for var in layer.weights}


def keras_applications_spec(variables: Mapping[str, Any]) -> ResNetSpec:
    """The spec of 'layer/variable' -> array (anything with ``.shape``): preset, ``classes`` and input channels;
    include_top=False is a headless backbone (num_classes=0)."""
    spec = PRESETS[keras_applications_preset(variables)]
    # classes= and a non-RGB input_shape= change only these two shapes
    top = variables["predictions/kernel"].shape[-1] if "predictions/kernel" in variables else 0
    return spec.replace(num_classes=top, in_channels=variables["conv1_conv/kernel"].shape[2])


def infer_spec(kapp_model: keras.Model) -> ResNetSpec:
    """The spec of a keras.applications model, inferred from its layers."""
    return keras_applications_spec(model_variables(kapp_model))


def check_model(
    spec: ResNetSpec, kapp_model: keras.Model, weights: Mapping[str, np.ndarray] | None = None,
) -> tuple[VariableTable, dict[str, keras.Variable]]:
    """Raise one WeightMismatchError for every problem on both sides; return the table and the variables."""
    table, variables = variable_table(spec), model_variables(kapp_model)
    missing, unexpected, mismatched = [], [], []
    if weights is not None:
        try:
            check_weights(spec, weights)
        except WeightMismatchError as err:
            missing, unexpected, mismatched = err.missing, err.unexpected, err.mismatched
    shapes = canonical_shapes(spec)
    for key, (path, perm) in table.items():
        want = tuple(shapes[key][i] for i in perm) if perm else shapes[key]
        if path not in variables:
            missing.append(f"{path} ({key})")
        elif tuple(variables[path].shape) != want:
            mismatched.append((f"{path} ({key})", tuple(variables[path].shape), want))
    unexpected += sorted(set(variables) - {path for path, _ in table.values()})
    if missing or unexpected or mismatched:
        raise WeightMismatchError(
            missing, unexpected, mismatched, context=f"keras.applications model {kapp_model.name!r} as {spec.name}",
        )
    return table, variables


def from_keras_applications(kapp_model: keras.Model, spec: ResNetSpec | str | None = None) -> dict[str, np.ndarray]:
    """The canonical dict of a keras.applications ResNet (preset inferred from its layers unless given)."""
    spec = infer_spec(kapp_model) if spec is None else get_spec(spec)
    table, variables = check_model(spec, kapp_model)
    return {key: to_canonical(variables[path].numpy(), perm) for key, (path, perm) in table.items()}


def to_keras_applications(
    weights: Mapping[str, np.ndarray], kapp_model: keras.Model, spec: ResNetSpec | str | None = None, *,
    consume: bool = False,
) -> None:
    """Load canonical weights into a keras.applications ResNet; strict on both sides, all problems at once.

    With ``consume``, ``weights`` (a dict no one else needs) is emptied as the variables are set.
    """
    spec = infer_spec(kapp_model) if spec is None else get_spec(spec)
    table, variables = check_model(spec, kapp_model, weights)
    for key, (path, perm) in table.items():
        var = variables[path]
        value = weights.pop(key) if consume else weights[key]
        var.assign(from_canonical(np.asarray(value), perm).astype(var.dtype))
