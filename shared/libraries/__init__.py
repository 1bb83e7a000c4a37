"""Other libraries' ResNet checkpoints that need none of our frameworks: Hugging Face transformers (``hf``), timm
(``timm``) and keras-hub (``keras_hub``). Each module reads a library's files into canonical weights and the spec
its config records, and writes canonical weights as that library saves them; ``shared.checkpoint.FORMATS`` names
the module for each format. The Flax ImageNet example's files need JAX to read (``jax_impl.checkpoint``); its
names are in ``flax_linen``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError, one_line
from ..infer import LABELS
from ..spec import ResNetSpec, differing


def refuse_unless_equal(spec: ResNetSpec, built: ResNetSpec, library: str, path: Path) -> None:
    """Refuse to write ``spec`` for ``library`` when the library would build ``built`` from the config written for it
    (a network that computes something else), naming every field that differs."""
    differ = [f"{name}={value!r} (it has {getattr(built, name)!r})"
              for name, value in differing(spec, built, ignore=LABELS).items()]
    if differ:
        raise CheckpointError(f"{path}: {library} has no ResNet with {', '.join(differ)}; the file would compute "
                              f"something other than {spec.name}")


def json_object(path: Path, what: str) -> dict | None:
    """The object a json file holds; None if there is no such file; a CheckpointError naming it where it holds no
    readable object (``what`` it should be, for the message)."""
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not readable json: {one_line(exc)}") from exc
    if not isinstance(found, dict):
        raise CheckpointError(f"{path}: holds a {type(found).__name__}, not {what}")
    return found
