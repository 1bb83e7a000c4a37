"""Keras checkpoint files <-> canonical weights: .keras (a functional model of Keras's own layers, ``standalone``,
which plain Keras loads), .weights.h5 (this ResNet's or a keras.applications model's) and the Keras 2 .h5 files
keras.applications downloads; models from files.

Files are read with h5py by layer name, never by instantiating what a file describes: Keras 3
records each layer's name beside its variables (saved by position: trainable ones in creation
order, then the rest), and Keras 2 names every variable. Files from a Keras 3 too old to record
layer names are read the way Keras reads them, by position into the architecture the caller names.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import keras
import numpy as np

from shared.checkpoint import (
    FORMATS, Checkpoint, CheckpointError, canonical_kinds, dtype_of, from_native, overclaims, spec_from_fields,
    spec_from_metadata, spec_to_metadata,
)
from shared.preprocessing import keras_applications
from shared.spec import PRESETS, ResNetSpec
from shared.weights import canonical_layers, check_weights, from_canonical, resolve, to_canonical

from .keras_applications import (
    check_model, from_keras_applications, keras_applications_names, keras_applications_spec, to_keras_applications,
    variable_table,
)
from . import standalone
from .resnet import ResNet, policy
from .weights import PARAMS, export_weights

# The position of each canonical parameter among a Keras layer's saved variables.
KERAS_ORDER = {
    "conv": ("weight", "bias"), "conv1d": ("weight",), "bn": ("weight", "bias", "running_mean", "running_var"),
    "linear": ("weight", "bias"),
}
# Preset -> keras.applications constructor.
KERAS_APPLICATIONS = {
    "keras_resnet50": "ResNet50", "keras_resnet101": "ResNet101", "keras_resnet152": "ResNet152",
    "keras_resnet50v2": "ResNet50V2", "keras_resnet101v2": "ResNet101V2", "keras_resnet152v2": "ResNet152V2",
}
REGISTERED_NAME = "resnet_parity>ResNet"  # what ResNet.get_config is saved under in a .keras config
RECORD = "resnet_parity.json"  # the spec, beside the functional model in a .keras file we write


def read_weights(path: Path, fmt: str, spec: ResNetSpec | None = None) -> Checkpoint:
    """Any Keras file as canonical weights; the architecture from a .keras config or keras.applications names.

    ``spec`` (the architecture the caller names) is needed only for files that record no layer names.
    """
    if fmt != "keras":
        with h5py.File(path, "r") as h5:
            return _read_h5(h5, path, path, fmt, spec)
    with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as scratch:
        ours = RECORD in archive.namelist()  # standalone.build's functional model, with the spec beside it
        for member in ("config.json", "model.weights.h5", *([RECORD] if ours else [])):
            _check_expansion(archive.getinfo(member), path)
        if ours:
            recorded = spec_from_metadata(json.loads(archive.read(RECORD)), path)
        else:
            recorded = _spec_from_config(json.loads(archive.read("config.json")), path)
        # h5py reads a file on disk one variable at a time; from memory it would hold the whole file twice
        weights_file = Path(archive.extract("model.weights.h5", scratch))
        with h5py.File(weights_file, "r") as h5:
            found = _read_h5(h5, weights_file, path, fmt, spec or recorded, functional=ours)
    found.spec = found.spec or recorded
    return found


def _check_expansion(member: zipfile.ZipInfo, path: Path) -> None:
    # weights hardly compress: a member far larger than the archive is a zip bomb, not a checkpoint
    if member.file_size > 2 * path.stat().st_size + (1 << 20):
        raise CheckpointError(f"{path}: {member.filename} would expand to {member.file_size:,} bytes; refused")


def _spec_from_config(config: dict, path: Path) -> ResNetSpec | None:
    """The spec a .keras config of this package's ResNet subclass records (what .keras files held before
    ``standalone``); None for a functional keras.applications model."""
    if config.get("registered_name") == REGISTERED_NAME:
        fields = dict(config["config"]["spec"])
        return spec_from_fields(fields.pop("name"), fields, path)
    if config.get("class_name") != "Functional":
        raise CheckpointError(f"{path}: a Keras {config.get('class_name')} model, not a resnet-parity or "
                              "keras.applications ResNet")
    return None


def _read_h5(h5: h5py.File, weights_file: Path, path: Path, fmt: str, spec: ResNetSpec | None, *,
             functional: bool = False) -> Checkpoint:
    """Keras 2 layout (root attribute 'layer_names') or Keras 3 (groups of numbered variables), by content;
    ``functional``: a .keras file of ``standalone.build``'s model."""
    root = h5["model_weights"] if "model_weights" in h5 else h5
    if "layer_names" in root.attrs:
        return _from_keras_applications(Datasets(_keras2_variables(root)), path, fmt)
    groups = _keras3_groups(h5, path)
    if not all("name" in group.attrs for group in groups):
        return _read_by_position(weights_file, groups, path, fmt, spec, functional=functional)
    layers = _keras3_layers(groups, path)
    if "conv1_conv" in layers:
        return _from_keras_applications(Datasets(_keras_applications_variables(layers, path)), path, fmt)
    return Checkpoint(_canonical_from_layers(layers, path), None, FORMATS[fmt])


def _check_storage(ds: h5py.Dataset) -> None:
    declared, stored = ds.size * ds.dtype.itemsize, ds.id.get_storage_size()
    if overclaims(declared, stored):
        raise ValueError(f"{ds.name} declares {declared:,} bytes but stores {stored:,}; refused")


class Datasets(Mapping):
    """Arrays read from HDF5 datasets as a converter asks for them: one variable in memory at a time."""

    def __init__(self, datasets: Mapping):
        self.datasets = datasets

    def __getitem__(self, key) -> np.ndarray:
        ds = self.datasets[key]
        _check_storage(ds)
        value = np.asarray(ds[()])
        if ds.attrs.get("dtype") == "bfloat16":
            import ml_dtypes  # Keras stores bfloat16 as raw 2-byte values and says so in an attribute

            return value.view(ml_dtypes.bfloat16)
        return value

    def __iter__(self):
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _keras2_variables(root: h5py.Group) -> dict[str, h5py.Dataset]:
    """'layer/variable' -> dataset in a Keras 2 file ('conv1_conv/kernel:0' inside each layer's group)."""
    out = {}
    for layer in _strings(root.attrs["layer_names"]):
        group = root[layer]
        for name in _strings(group.attrs["weight_names"]):
            out[f"{layer}/{name.rsplit('/', 1)[-1].split(':')[0]}"] = group[name]
    return out


def _keras3_groups(h5: h5py.File, path: Path) -> list[h5py.Group]:
    """Every '.../vars' group that holds variables, an optimizer's state aside."""
    groups = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group) and name.rsplit("/", 1)[-1] == "vars" and len(obj) \
                and name.split("/", 1)[0] != "optimizer":
            if sorted(obj) != sorted(str(i) for i in range(len(obj))):
                raise CheckpointError(f"{path}: malformed variables at {name}")
            groups.append(obj)

    h5.visititems(visit)
    if not groups:
        raise CheckpointError(f"{path}: no layer variables in the file")
    return groups


def _keras3_layers(groups: list[h5py.Group], path: Path) -> dict[str, list[h5py.Dataset]]:
    """Layer name -> its variables' datasets in saved order."""
    layers: dict[str, list[h5py.Dataset]] = {}
    for group in groups:
        layer = _strings([group.attrs["name"]])[0]
        if layer in layers:
            raise CheckpointError(f"{path}: two groups of variables for layer {layer!r}")
        layers[layer] = [group[str(i)] for i in range(len(group))]
    return layers


def _read_by_position(
    weights_file: Path, groups: list[h5py.Group], path: Path, fmt: str, spec: ResNetSpec | None, *, functional: bool,
) -> Checkpoint:
    """A Keras 3 file that records no layer names, read as Keras reads it: by position, into ``spec``'s model.

    Keras matches each variable by where the model keeps the layer (attribute names, or class-name order
    for keras.applications models), so nothing in the file says which architecture it is.
    """
    if spec is None:
        raise CheckpointError(f"{path}: records no layer names (an older Keras 3 saved it), so its "
                              "variables can only be read by position: pass arch=NAME")
    for group in groups:
        for i in range(len(group)):
            _check_storage(group[str(i)])
    dtypes = {group["0"].dtype.name for group in groups}
    dtype = dtypes.pop() if len(dtypes) == 1 and dtypes <= set(FORMATS[fmt].dtypes) else "float32"
    if spec.name in KERAS_APPLICATIONS:
        model = _keras_applications_model(spec)
    elif functional:
        model = standalone.build(spec, dtype)
    else:
        model = ResNet(spec, dtype=dtype)
        model.build_all()
    expected = len(canonical_layers(spec))  # one Keras layer with variables per canonical layer, in every model
    if len(groups) != expected:
        raise CheckpointError(f"{path}: holds variables of {len(groups)} layers, but {spec.name} has {expected}")
    model.load_weights(weights_file)  # Keras's own check: every layer's variable count and shapes
    if spec.name in KERAS_APPLICATIONS:
        weights = from_keras_applications(model, spec)
    else:
        weights = standalone.export(model, spec) if functional else export_weights(model)
    return Checkpoint(weights, spec, FORMATS[fmt], [f"read by position as {spec.name}: the file records no layer names"])


def _canonical_from_layers(layers: Mapping[str, list[h5py.Dataset]], path: Path) -> dict[str, np.ndarray]:
    """This package's ResNet: layers are named by their canonical module path."""
    variables, unknown = {}, []
    for layer, values in layers.items():
        # a conv saves one or two variables, a BN four
        kind = next((k for k in canonical_kinds(layer) if len(values) <= len(KERAS_ORDER[k])), None)
        if kind is None:
            unknown.append(layer)
            continue
        for param, value in zip(KERAS_ORDER[kind], values):
            variables[(layer, PARAMS[kind][param][0])] = value
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} layers that are not ResNet layers, e.g. {', '.join(unknown[:3])}")
    return from_native(Datasets(variables), PARAMS, path)


def _keras_applications_kinds() -> dict[str, str]:
    """keras.applications layer name -> 'conv'/'bn'/'linear', for every layer of every keras_* preset."""
    kinds = {}
    for name in KERAS_APPLICATIONS:
        spec = PRESETS[name]
        names = keras_applications_names(spec)
        kinds.update({names[layer.path]: layer.kind for layer in canonical_layers(spec)})
    return kinds


def _keras_applications_variables(layers: Mapping[str, list[h5py.Dataset]], path: Path) -> dict[str, h5py.Dataset]:
    """'layer/variable' -> array for a Keras 3 file saved from a keras.applications model."""
    kinds = _keras_applications_kinds()
    unknown = [layer for layer in layers if layer not in kinds]
    if unknown:
        raise CheckpointError(f"{path}: layers that keras.applications ResNets lack, e.g. {', '.join(unknown[:3])}")
    out = {}
    for layer, values in layers.items():
        kind = kinds[layer]
        for param, value in zip(KERAS_ORDER[kind], values):
            out[f"{layer}/{PARAMS[kind][param][0]}"] = value
    return out


def _from_keras_applications(variables: Mapping[str, np.ndarray], path: Path, fmt: str) -> Checkpoint:
    """Canonical weights and spec from keras.applications 'layer/variable' arrays (the names fix the preset)."""
    try:
        spec = keras_applications_spec(variables)
    except ValueError:
        raise CheckpointError(f"{path}: keras.applications layers that match no keras_* preset") from None
    weights = {key: to_canonical(np.asarray(variables[name]), perm) for key, (name, perm) in variable_table(spec).items()}
    return Checkpoint(weights, spec, FORMATS[fmt], preprocessing=keras_applications(spec))


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str, *, consume: bool = False,
) -> None:
    """Write canonical weights as a Keras file: .keras holds ``standalone.build``'s functional model (it loads with
    plain ``keras.models.load_model``) and the spec beside it; .weights.h5 this ResNet's variables
    (``ResNet.load_weights``); or a keras.applications model's. Variables of the weights' own dtype (not mixed
    precision): the file stores what it is given."""
    if fmt == "keras":
        model = standalone.build(spec, dtype_of(weights, spec))
        standalone.assign(model, spec, weights, consume=consume)
        model.save(path)
        with zipfile.ZipFile(path, "a") as archive:  # keras.models.load_model reads only its own members
            archive.writestr(RECORD, json.dumps(spec_to_metadata(spec)))
        return
    if fmt == "keras-weights":
        _holding(spec, weights, dtype_of(weights, spec), consume).save_weights(path)
        return
    model = _keras_applications_model(spec)
    if fmt == "keras-app":
        to_keras_applications(weights, model, spec, consume=consume)
        model.save_weights(path)
    else:
        table, _ = check_model(spec, model, weights)
        _write_keras2(path, weights, model, table, consume=consume)


def _keras_applications_model(spec: ResNetSpec) -> keras.Model:
    """The keras.applications model with ``spec``'s structure (its classes and input channels)."""
    labels = dict(name=spec.name, source=spec.source, image_size=spec.image_size)
    for name, constructor in KERAS_APPLICATIONS.items():
        if PRESETS[name].replace(num_classes=spec.num_classes, in_channels=spec.in_channels, **labels) == spec:
            # a headless backbone is include_top=False with the average pool, as our models end
            return getattr(keras.applications, constructor)(
                weights=None, include_top=not spec.headless, pooling="avg" if spec.headless else None,
                classes=spec.num_classes or 1000, input_shape=(spec.image_size, spec.image_size, spec.in_channels),
            )
    raise CheckpointError(f"keras.applications has no model for {spec.name}; it has {', '.join(KERAS_APPLICATIONS)}")


def _write_keras2(
    path: Path, weights: Mapping[str, np.ndarray], model: keras.Model, table, *, consume: bool = False,
) -> None:
    """The Keras 2 layout keras.applications downloads; its loader matches layers by position, so keep the model's order.

    With ``consume``, ``weights`` is emptied as the variables are written.
    """
    layers = [layer for layer in model.layers if layer.weights]
    inverse = {name: (key, perm) for key, (name, perm) in table.items()}
    with h5py.File(path, "w") as h5:
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["keras_version"] = keras.__version__
        h5.attrs["layer_names"] = np.array([layer.name.encode() for layer in layers])
        for layer in layers:
            group = h5.create_group(layer.name)
            names = [f"{layer.name}/{var.name}:0" for var in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for var, name in zip(layer.weights, names):
                key, perm = inverse[f"{layer.name}/{var.name}"]
                value = weights.pop(key) if consume else weights[key]
                group.create_dataset(name, data=np.ascontiguousarray(from_canonical(np.asarray(value), perm)))


def model_from_weights(spec: ResNetSpec, weights: Mapping[str, np.ndarray], dtype: str = "float32") -> ResNet:
    """A built model holding canonical ``weights``; ``dtype`` as for build_model (bfloat16/float16: mixed precision)."""
    return _holding(spec, weights, policy(dtype))


weights_to_save = export_weights  # a Keras model's files hold its variables and nothing besides


def _holding(spec: ResNetSpec, weights: Mapping[str, np.ndarray], keras_dtype: str, consume: bool = False) -> ResNet:
    """A built model of the Keras dtype policy ``keras_dtype`` whose variables are created with their values.

    Keras layers create their variables from initializers, so each layer is given its checkpoint
    values as initializers and built from the spec's shapes: no random init (1 s for resnet50), no
    build pass, no second copy to assign from. With ``consume``, ``weights`` is emptied layer by layer.
    """
    check_weights(spec, weights)
    model = ResNet(spec, dtype=keras_dtype)
    for layer in canonical_layers(spec):
        target = resolve(model, layer.path)
        own = {}
        for param in layer.shapes:
            attr, perm = PARAMS[layer.kind][param]
            value = from_canonical(np.asarray(weights[f"{layer.path}.{param}"]), perm)
            own[attr] = getattr(target, f"{attr}_initializer")
            setattr(target, f"{attr}_initializer", lambda shape, dtype=None, value=value: value)
        spatial = {"linear": 0, "conv1d": 1}.get(layer.kind, 2)
        target.build((None,) * (1 + spatial) + (layer.in_channels,))
        for attr, initializer in own.items():
            setattr(target, f"{attr}_initializer", initializer)  # the layer's own, for anything that rebuilds it
        if consume:
            for param in layer.shapes:
                del weights[f"{layer.path}.{param}"]
    for stage in range(1, spec.num_stages + 1):
        for block in getattr(model, f"layer{stage}"):
            block.built = True
    model.built = True
    return model
