"""The architecture a file records: the preset's name and the fields that differ from it, as string metadata
(safetensors, Orbax) or a JSON config (.keras); and the preprocessing, as string metadata (safetensors)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

from ..errors import CheckpointError, one_line
from ..preprocessing import Preprocessing
from ..spec import PRESETS, ResNetSpec, differing, get_spec

METADATA_ARCH, METADATA_OVERRIDES = "resnet_parity.arch", "resnet_parity.overrides"
METADATA_PREPROCESSING = "resnet_parity.preprocessing"


def spec_to_metadata(spec: ResNetSpec) -> dict[str, str]:
    """String metadata naming the preset and every field that differs from it."""
    base = PRESETS.get(spec.name)
    if base is None:
        overrides = {k: v for k, v in dataclasses.asdict(spec).items() if k != "name"}
    else:
        overrides = differing(spec, base)
    return {METADATA_ARCH: spec.name, METADATA_OVERRIDES: json.dumps(overrides)}


def spec_from_metadata(metadata: Mapping[str, str], path: Path) -> ResNetSpec | None:
    """The spec written by ``spec_to_metadata``, or None when the metadata records none."""
    if METADATA_ARCH not in metadata:
        return None
    return spec_from_fields(metadata[METADATA_ARCH], json.loads(metadata.get(METADATA_OVERRIDES, "{}")), path)


def spec_from_fields(name: str, fields: Mapping, path: Path) -> ResNetSpec:
    """A preset with overrides, or a whole spec, from a file's JSON; a bad record is a CheckpointError."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if isinstance(fields.get("conv_bias"), bool):  # written before conv_bias named its choice
        fields["conv_bias"] = "all" if fields["conv_bias"] else "unnormalized"
    try:
        if name in PRESETS:
            return get_spec(name, **fields)
        return ResNetSpec(name=name, **fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: records an invalid architecture {name!r}: {one_line(exc)}") from exc


def preprocessing_to_metadata(preprocessing: Preprocessing) -> dict[str, str]:
    return {METADATA_PREPROCESSING: json.dumps(preprocessing.to_dict())}


def preprocessing_from_metadata(metadata: Mapping[str, str], path: Path) -> Preprocessing | None:
    """The preprocessing ``preprocessing_to_metadata`` wrote (its origin: this file), or None if there is none."""
    if METADATA_PREPROCESSING not in metadata:
        return None
    try:
        found = Preprocessing.from_dict(json.loads(metadata[METADATA_PREPROCESSING]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: records an invalid preprocessing: {one_line(exc)}") from exc
    return found.replace(origin=f"recorded in {path.name}'s metadata ({found.origin})")
