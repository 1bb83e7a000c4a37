"""Flax checkpoint files <-> canonical weights: an Orbax checkpoint directory of the NNX state (Flax's
recommended format) and ``flax.serialization`` msgpack of it, and the same two holding the Flax ImageNet
example's linen variables (``shared.libraries.flax_linen``); models from weights.

All are read without a target structure, so the file's own variable names decide what is what.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import jax
import msgpack
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, serialization

from shared.checkpoint import (
    FORMATS, Checkpoint, CheckpointError, from_native, mismatch_line, overclaims, spec_from_metadata, spec_to_metadata,
)
from shared.libraries import flax_linen
from shared.spec import ResNetSpec
from shared.weights import WeightMismatchError, canonical_layers, from_canonical

from .resnet import ResNet, empty_model
from .weights import PARAMS, export_weights, import_weights


def read_weights(path: Path, fmt: str, spec: ResNetSpec | None = None) -> Checkpoint:
    """An Orbax directory (architecture from its metadata) or a msgpack file, as canonical weights; either may hold
    the Flax ImageNet example's variables (the architecture from their shapes).

    Both record their variable names, so ``spec`` is not needed.
    """
    if path.is_dir():
        with _orbax_quietly():
            checkpointer = ocp.StandardCheckpointer()
            try:
                metadata = checkpointer.metadata(path.absolute())
                _check_declared(metadata.item_metadata, path)
                # the arrays as saved, read into numpy: no device_put, so no second copy (and 40% faster)
                target = jax.tree.map(lambda leaf: np.empty(leaf.shape, leaf.dtype), metadata.item_metadata)
                tree = checkpointer.restore(path.absolute(), target)
            finally:
                checkpointer.close()
        recorded = spec_from_metadata(metadata.custom_metadata or {}, path)
    else:
        tree = serialization.msgpack_restore(path.read_bytes())
        recorded = None
    if fmt == "flax-linen" or (isinstance(tree, dict) and {"params", "batch_stats"} <= set(tree)):
        try:
            weights, spec = flax_linen.to_canonical_weights(tree, path)
        except WeightMismatchError as err:
            raise CheckpointError(f"{path}: the Flax ImageNet example's variables do not fit its {err.context}: "
                                  f"{mismatch_line(err)}") from err
        ignored = sorted(set(tree) - set(flax_linen.COLLECTIONS))
        notes = [f"the Flax ImageNet example's variables; ignored its {', '.join(ignored)}"] if ignored else []
        return Checkpoint(weights, spec, FORMATS["flax-linen"], notes)
    variables = {(".".join(keys[:-1]), keys[-1]): value for keys, value in _leaves(tree, (), path)}
    del tree  # the arrays live on in `variables` alone, which from_native empties as it goes
    return Checkpoint(from_native(variables, PARAMS, path, consume=True), recorded, FORMATS[fmt])


def _check_declared(item_metadata, path: Path) -> None:
    """Refuse arrays far larger than the directory: missing chunks would be filled in, a memory bomb."""
    declared = sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(item_metadata))
    stored = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if overclaims(declared, stored):
        raise ValueError(f"declares {declared:,} bytes of arrays but stores {stored:,}; refused")


@contextlib.contextmanager
def _orbax_quietly() -> Iterator[None]:
    """Keep Orbax's output off stderr while it reads: the error we raise says what went wrong, in one line.

    Orbax logs damaged metadata through absl and carries on; when a damaged array stops a restore,
    TensorStore callbacks still pending on Orbax's closed event loop print tracebacks from other
    threads after the error has surfaced, so stderr is held until they have finished.
    """
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [logger.level for logger in loggers]
    held, saved = io.StringIO(), sys.stderr
    sys.stderr = held
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    except BaseException:
        deadline, written = time.monotonic() + 2.0, -1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... never awaited": the abandoned reads
            while held.tell() != written and time.monotonic() < deadline:
                written = held.tell()
                gc.collect()  # abandoned coroutines and futures report as they are collected
                time.sleep(0.1)
        raise
    finally:
        sys.stderr = saved
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _leaves(tree, keys: tuple[str, ...], path: Path):
    """(key path, array) for every array of a nested state dict; Orbax keeps each Variable as {'value': array}."""
    if isinstance(tree, dict):
        if set(tree) == {"value"} and not isinstance(tree["value"], dict):
            tree = tree["value"]
        else:
            for key, sub in tree.items():
                yield from _leaves(sub, (*keys, str(key)), path)
            return
    if not isinstance(tree, (np.ndarray, jax.Array)) or len(keys) < 2:
        raise CheckpointError(f"{path}: {'/'.join(keys) or 'the top level'} is a {type(tree).__name__}, not an array")
    yield keys, np.asarray(tree)


def state_dict(weights: Mapping[str, np.ndarray], spec: ResNetSpec, *, leaf=np.asarray, consume: bool = False) -> dict:
    """The NNX state as a nested dict, ``leaf(array)`` in Flax's layout at each variable, straight from canonical weights.

    NNX paths are the canonical module paths (('layer1', '0', 'conv1', 'kernel')), so no model is needed.
    With ``consume``, ``weights`` is emptied as the tree is built.
    """
    tree: dict = {}
    for layer in canonical_layers(spec):
        node = tree
        for part in layer.path.split("."):
            node = node.setdefault(part, {})
        for param in layer.shapes:
            attr, perm = PARAMS[layer.kind][param]
            key = f"{layer.path}.{param}"
            node[attr] = leaf(from_canonical(np.asarray(weights.pop(key) if consume else weights[key]), perm))
    return _in_nnx_order(tree)


def _in_nnx_order(tree: dict) -> dict:
    """The keys in the order of ``nnx.state``: sorted, list indices as numbers (so files match Flax's byte for byte)."""
    def order(key: str) -> tuple:
        return (0, int(key), "") if key.isdigit() else (1, 0, key)

    return {key: _in_nnx_order(tree[key]) if isinstance(tree[key], dict) else tree[key] for key in sorted(tree, key=order)}


def _variable(value: np.ndarray) -> dict:
    """A Variable as Orbax saves ``nnx.state(model)``: {'value': jax.Array}.

    The jax.Array shares the numpy copy's memory (may_alias): it lives only until the write ends, and
    without a second copy a resnet50 write peaks at 2x the checkpoint instead of 3x.
    """
    return {"value": jax.device_put(np.ascontiguousarray(value), may_alias=True)}


def _write_msgpack(path: Path, tree: dict) -> None:
    """flax.serialization's bytes of ``tree`` (emptied on the way), one array at a time: a msgpack map is its
    header and its entries in a row, so this is byte for byte ``to_bytes`` without the whole file in memory."""
    def pack(f, node) -> None:
        if not isinstance(node, dict):
            f.write(serialization.msgpack_serialize(node))
            return
        f.write(msgpack.Packer().pack_map_header(len(node)))
        for key in list(node):
            f.write(msgpack.packb(key))
            pack(f, node.pop(key))  # written: let it go

    with open(path, "wb") as f:
        pack(f, tree)


def write_orbax(path: Path, tree: dict, spec: ResNetSpec) -> None:
    """What Flax users write with Orbax's StandardCheckpointer from ``nnx.state(model)``, the architecture in its metadata."""
    checkpointer = ocp.StandardCheckpointer()
    try:
        checkpointer.save(path.absolute(), tree, custom_metadata=spec_to_metadata(spec))
        checkpointer.wait_until_finished()
    finally:
        checkpointer.close()


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str, *, consume: bool = False,
) -> None:
    """Write canonical weights as the NNX state of this ResNet, or as the Flax ImageNet example's variables (msgpack
    for a .msgpack path, else Orbax); with ``consume``, emptying ``weights``; no model built."""
    if fmt == "flax-linen":
        tree = flax_linen.from_canonical_weights(weights, spec, path, consume=consume)
        if path.suffix == ".msgpack":
            _write_msgpack(path, tree)
        else:
            write_orbax(path, jax.tree.map(lambda a: jax.device_put(a, may_alias=True), tree), spec)
    elif fmt == "orbax":
        write_orbax(path, state_dict(weights, spec, leaf=_variable, consume=consume), spec)
    else:
        _write_msgpack(path, state_dict(weights, spec, consume=consume))


def model_from_weights(spec: ResNetSpec, weights: Mapping[str, np.ndarray], dtype: str = "float32") -> ResNet:
    """A model holding canonical ``weights`` (of ``dtype``), built without random init."""
    model = empty_model(spec, dtype)
    import_weights(model, weights)
    return model


weights_to_save = export_weights  # an NNX state holds the variables and nothing besides
