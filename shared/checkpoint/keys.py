"""The state_dicts people hold: a ResNet's keys inside other code's names, unwrapped to the canonical ones.

Never a guess: a prefix is removed only when every key carries it (or the caller names it), and each step leaves a
note saying what was done and why, for the report.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from ..errors import CheckpointError

T = TypeVar("T")

# Prefixes that code holding a ResNet puts before every key of its state_dict, and what puts each there.
PREFIXES = {
    "module.": "DataParallel or DistributedDataParallel",
    "_orig_mod.": "torch.compile",
    "model.": "a training wrapper's attribute (Lightning, EMA copies)",
    "backbone.": "a backbone inside a detection, segmentation or mmpretrain model",
    "encoder.": "a self-supervised model's encoder",
    "body.": "torchvision detection's IntermediateLayerGetter",
}
# mmpretrain's ImageClassifier: backbone.* (a torchvision-named ResNet), neck (GlobalAveragePooling, no weights) and
# head; its LinearClsHead is one Linear(in_channels, num_classes) at head.fc, what torchvision calls fc.
MMPRETRAIN_HEAD = ("head.fc.weight", "head.fc.bias")


def unwrap(weights: Mapping[str, T], strip_prefix: str | None = None) -> tuple[dict[str, T], list[str]]:
    """``weights`` under the names the ResNet inside them has, and notes saying what was removed.

    ``strip_prefix`` is removed from every key that carries it (one must). Then, repeatedly, a prefix of
    ``PREFIXES`` that every key carries is removed; and mmpretrain's classifier layout (every key under backbone.,
    neck. or head., with head.fc) becomes the network and its fc. Keys that fit nowhere stay as they are, for the
    strict check to name (or ``drop_unexpected`` to drop)."""
    out, notes = dict(weights), []
    if strip_prefix is not None:
        carried = [k for k in out if k.startswith(strip_prefix)]
        if not strip_prefix or not carried:
            raise CheckpointError(f"strip_prefix={strip_prefix!r}: no key starts with it (keys: "
                                  f"{', '.join(list(out)[:3])}{', ...' if len(out) > 3 else ''})")
        out = _renamed(out, {k: k.removeprefix(strip_prefix) for k in carried}, f"strip_prefix={strip_prefix!r}")
        notes.append(f"removed the prefix {strip_prefix!r} from {len(carried)} of {len(weights)} keys, as asked")
    while out and (prefix := next((p for p in PREFIXES if all(k.startswith(p) for k in out)), None)):
        out = {k.removeprefix(prefix): v for k, v in out.items()}
        notes.append(f"removed the {prefix!r} prefix every key carries ({PREFIXES[prefix]})")
    if all(k in out for k in MMPRETRAIN_HEAD) and all(k.startswith(("backbone.", "neck.", "head.")) for k in out):
        names = {k: k.removeprefix("backbone.") for k in out if k.startswith("backbone.")}
        names.update({k: "fc." + k.removeprefix("head.fc.") for k in MMPRETRAIN_HEAD})
        out = _renamed(out, names, "the mmpretrain layout")
        rest = [k for k in out if k.startswith(("neck.", "head."))]
        notes.append("mmpretrain's ImageClassifier layout: the network from backbone.*, its classifier fc from head.fc "
                     "(mmpretrain's LinearClsHead is the Linear torchvision calls fc)"
                     + (f"; {len(rest)} other head or neck keys left as they are" if rest else ""))
    return out, notes


def _renamed(weights: dict[str, T], names: Mapping[str, str], why: str) -> dict[str, T]:
    """``weights`` with the keys of ``names`` renamed; a CheckpointError where two keys would get one name."""
    out: dict[str, T] = {}
    for key, value in weights.items():
        new = names.get(key, key)
        if new in out:
            raise CheckpointError(f"{why}: two keys would both be named {new!r}")
        out[new] = value
    return out
