"""Eval parity: port the reference framework's weights to the others and check every block's output in eval mode
(the stem, every block, the pooled features, the logits) with the rule of ``shared.parity.rule``."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Callable, Mapping

import numpy as np

from .. import frameworks
from ..errors import ParityInputError, ResNetParityError, one_line
from ..spec import ResNetSpec
from ..weights import count_parameters
from . import floor
from .inputs import _label, batch_problem, load_inputs, participants, starting_weights
from .report import FrameworkResult, ParityReport
from .rule import check_tensors, float64_note, rule_for


def eval_tensors(spec: ResNetSpec) -> list[str]:
    """The features eval parity checks, in forward order: the stem, every block, the pooled features, the logits
    (none in a headless backbone)."""
    return ["stem", *(plan.prefix for plan in spec.blocks()), "avgpool", *([] if spec.headless else ["fc"])]


def top_k_agreement(logits: np.ndarray, truth: np.ndarray, k: int) -> float:
    """The fraction of the batch whose top-k classes (as a set; k = 1: the class) equal the truth's."""
    k = min(k, logits.shape[-1])
    ours = np.sort(np.argsort(-logits.astype(np.float64), axis=-1)[:, :k], axis=-1)
    theirs = np.sort(np.argsort(-truth.astype(np.float64), axis=-1)[:, :k], axis=-1)
    return float(np.mean(np.all(ours == theirs, axis=-1)))


ModelFactory = Callable[[ResNetSpec, Mapping[str, np.ndarray], str], object]  # (spec, weights, dtype) -> model


def compare(
    arch: str | ResNetSpec | None = None, *, weights: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    weights_format: str | None = None, inputs: np.ndarray | str | os.PathLike | None = None, source: str = "torch",
    targets: list[str] | None = None, dtype: str = "float32", size: int | None = None, batch: int = 2, seed: int = 0,
    tolerance: float | None = None, k: float | None = None, device: str = "cpu",
    models: Mapping[str, ModelFactory] | None = None,
) -> ParityReport:
    """Port the source framework's weights to the others and check every block's output in eval mode.

    ``weights``: a checkpoint file (any format ``shared.checkpoint`` reads, ``weights_format`` where its
    suffix does not say), a ``shared.checkpoint.Source`` opened with its options, or a canonical dict; default:
    random weights, every tensor randomised (BN statistics included). ``inputs``: an NHWC array or .npy
    file; default: a random batch of ``batch`` images of side ``size``. ``tolerance``: a fixed bound on
    the pairwise error instead of the float64-floor rule. ``k``: the floor rule's margin in place of the table's
    (``shared.parity.rule.rule_for``; not with ``tolerance``). ``models``: framework -> factory(spec, weights,
    dtype) returning a model that holds the ported weights, in place of the framework's own
    ``model_from_weights`` (tests inject deliberate mistakes this way).
    """
    source, names = participants(source, targets)
    spec, initial, weights_record, notes = starting_weights(arch, weights, weights_format, dtype, seed)
    if inputs is None:
        size = spec.image_size if size is None else size
        if problem := batch_problem(spec, batch, size):
            raise ParityInputError(problem)
        x = np.random.default_rng(seed).standard_normal((batch, size, size, spec.in_channels))
        x = x.astype(np.float64 if dtype == "float64" else np.float32)
        inputs_record = {"origin": "random", "seed": seed, "shape": list(x.shape)}
    else:
        x = load_inputs(inputs, spec)
        inputs_record = {"origin": _label(inputs), "shape": list(x.shape)}
    rule = rule_for(dtype, "eval", tolerance, k)
    models = models or {}
    params, stats = count_parameters(spec)

    outputs, counts, timings, devices = {}, {}, {}, {}
    for name in names:
        start = time.perf_counter()
        frameworks.load(name)
        timings[name] = {"import_s": time.perf_counter() - start}
    with frameworks.numerics(names, dtype, device) as settings:
        ported = None
        for name in names:
            impl, t = frameworks.load(name), timings[name]
            try:
                start = time.perf_counter()
                # built straight from the weights: no random initialisation to throw away
                port = models.get(name, frameworks.load_checkpoints(name).model_from_weights)
                model = port(spec, initial if ported is None else ported, dtype)
                if ported is None:  # what the source holds is what gets ported
                    ported = impl.export_weights(model)
                t["build_s"] = time.perf_counter() - start
                start = time.perf_counter()
                outputs[name] = impl.features(model, x)
                t["forward_s"] = time.perf_counter() - start
            except ResNetParityError:
                raise
            except Exception as exc:  # e.g. a kernel the framework lacks for this dtype here; --debug shows it
                raise ParityInputError(f"{frameworks.LABELS[name]} cannot run {spec.name} in {dtype} on {device}: "
                                       f"{one_line(exc)}") from exc
            counts[name] = count_parameters(spec, impl.export_weights(model))
            devices[name] = settings[name]["device"]
        truth = None
        if rule["kind"] == "floor":
            start = time.perf_counter()
            truth = _truth(source, spec, ported, x, device)
            timings[source]["truth_s"] = time.perf_counter() - start

    tensors = eval_tensors(spec)
    sampled = None
    if truth is not None:
        start = time.perf_counter()
        sampled = floor.judged(
            lambda more, count: floor.largest_errors(floor.eval_runs(source, spec, ported, x, dtype, device=device,
                                                                     seed=[seed, more], count=count), truth),
            lambda found: {n: check_tensors(tensors, outputs[n], outputs[source], truth, rule, found)
                           for n in names if n != source}, notes)
        timings[source]["floor_samples_s"] = time.perf_counter() - start
    results = []
    for name in names:
        checks = check_tensors(tensors, outputs[name], outputs[source], truth, rule, sampled)
        top = (truth or outputs[source])["fc"]
        agree = [None, None] if spec.headless else [top_k_agreement(outputs[name]["fc"], top, k) for k in (1, 5)]
        results.append(FrameworkResult(
            name, name == source, *counts[name], counts[name] == (params, stats), checks, devices[name], *agree,
            timings[name],
        ))
    if truth is not None:
        notes += float64_diagnosis(results, spec, ported, x, truth, device=device, models=models)
    return ParityReport(
        "eval", spec.name, asdict(spec), source, dtype, rule, inputs_record, weights_record, settings, frameworks.versions(names),
        params, stats, results, notes,
    )


def float64_diagnosis(results: list[FrameworkResult], spec: ResNetSpec, ported: Mapping[str, np.ndarray], x: np.ndarray,
                      truth: Mapping[str, np.ndarray], *, device: str, models: Mapping[str, ModelFactory]) -> list[str]:
    """A note per framework that failed a low-precision check: its model (``models``' factory where given) rerun in
    float64 on the same weights and inputs, the tensors it failed against the truth (as training's
    ``float64_diagnosis``; the verdict stays as it is)."""
    rule = rule_for("float64", "eval", None)
    notes = []
    for result in results:
        failed = [c.name for c in result.checks if not c.passed]
        if result.reference or not failed:
            continue
        impl = frameworks.load(result.framework)
        with impl.numerics("float64", device):
            port = models.get(result.framework, frameworks.load_checkpoints(result.framework).model_from_weights)
            model = port(spec, {k: np.asarray(v, np.float64) for k, v in ported.items()}, "float64")
            wide = impl.features(model, np.asarray(x, np.float64))
        worst = max(check_tensors(failed, wide, truth, None, rule), key=lambda c: c.error)
        notes.append(float64_note(frameworks.LABELS[result.framework], len(failed), worst,
                                  "the dtype's rounding, beyond what the floor samples drew", ""))
    return notes


def _truth(source: str, spec: ResNetSpec, weights: Mapping[str, np.ndarray], x: np.ndarray, device: str) -> dict:
    """The reference framework's features in float64, on the ported weights and the same inputs."""
    with frameworks.load(source).numerics("float64", device):
        wide = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        model = frameworks.load_checkpoints(source).model_from_weights(spec, wide, "float64")
        return frameworks.load(source).features(model, np.asarray(x, np.float64))
