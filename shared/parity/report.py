"""What a parity check found, as data: per framework its tensors' checks, per run the report; ``to_dict`` is the
JSON schema (docs/parity_rule.md, "The JSON report"). Rendering it for people is the command line's
(``shared.cli.report``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .rule import TensorCheck


SCHEMA_VERSION = 1


@dataclass
class FrameworkResult:
    """One framework's side of a parity check."""

    framework: str
    reference: bool
    parameters: int
    bn_statistics: int
    counts_match: bool
    checks: list[TensorCheck]
    device: str = ""
    top1_agree: float | None = None  # fraction of the batch whose top-1 class equals the truth's
    top5_agree: float | None = None  # ... whose top-5 set equals the truth's
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def first_divergence(self) -> str | None:
        """The first tensor, in forward order, beyond its limit."""
        return next((c.name for c in self.checks if c.binding and not c.passed), None)

    @property
    def passed(self) -> bool:
        return self.counts_match and self.first_divergence is None

    def worst(self) -> TensorCheck:
        """The check closest to (or furthest beyond) its limit."""
        return max(self.checks, key=lambda c: c.error / c.limit if c.limit > 0 else float("inf"))

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "checks"}
        return {**out, "first_divergence": self.first_divergence, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass
class ParityReport:
    """What ``compare`` (mode "eval") or ``train_parity`` (mode "train") found; ``to_dict`` is the JSON schema."""

    mode: str
    arch: str
    spec: dict
    source: str
    dtype: str
    rule: dict
    inputs: dict
    weights: dict
    settings: dict[str, dict[str, str]]
    versions: dict[str, dict[str, str]]
    expected_parameters: int
    expected_bn_statistics: int
    results: list[FrameworkResult]
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # mode-specific facts (train: steps, recipe, losses)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def first_divergence(self) -> str | None:
        """The earliest tensor, in forward order, where any framework goes beyond its limit."""
        order = {c.name: i for r in self.results for i, c in enumerate(r.checks)}
        found = [r.first_divergence for r in self.results if r.first_divergence]
        return min(found, key=order.get) if found else None

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        return {"schema_version": SCHEMA_VERSION, **out, "first_divergence": self.first_divergence,
                "passed": self.passed, "results": [r.to_dict() for r in self.results]}


def fact_of(name: str) -> str:
    """'params@5 layer1.0.conv1.weight' -> 'params@5': the group a training tensor belongs to."""
    return name.split(" ")[0] if " " in name else name


def jsonable(obj):
    """A report's dict with non-finite numbers as strings ("inf"), so strict JSON parsers read it."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
