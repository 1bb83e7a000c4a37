"""A photograph through each side's own preprocessing: weight parity on the input the source's preprocessing makes of
it, and, reported apart, how much the preprocessing each framework's users apply by habit changes the answer.

Perfect weight parity with the wrong preprocessing still gives wrong answers: keras.applications' ResNet50 takes
Caffe-style BGR with the ImageNet means subtracted, a PyTorch user feeds it torchvision's normalised RGB. Both
inputs run through the same model (the source framework's, float32), so the difference is the preprocessing alone.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .. import frameworks
from ..checkpoint import Source, as_float32
from ..errors import ParityInputError
from ..preprocessing import Preprocessing, assumed, load_image, of_framework
from ..weights import relative_error
from .eval import compare
from .inputs import participants, starting_weights
from .report import ParityReport


def compare_image(
    image: str | os.PathLike, arch=None, *, weights: Mapping[str, np.ndarray] | Source | str | os.PathLike | None = None,
    weights_format: str | None = None, source: str = "torch", targets: list[str] | None = None,
    dtype: str = "float32", size: int | None = None, seed: int = 0, tolerance: float | None = None, k: float | None = None,
    device: str = "cpu",
) -> ParityReport:
    """``compare`` on a photograph prepared as the source expects (what its file records, its library's documented
    default, or, for random weights, the source framework's habit; ``size`` replaces its input size), with
    ``report.extra['preprocessing']``: per framework, the habit of its users (``shared.preprocessing.of_framework``)
    and how far the logits move when the photograph goes through that instead, in the same model."""
    source_name, names = participants(source, targets)
    opened = Source.open(weights, weights_format) if isinstance(weights, (str, os.PathLike)) else weights
    spec, initial, record, notes = starting_weights(arch, opened, None, dtype, seed)
    if spec.in_channels != 3:
        raise ParityInputError(f"image={image}: a photograph has 3 channels, {spec.name} takes {spec.in_channels}")
    if isinstance(opened, Source):
        expected = opened.preprocessing
    else:  # random weights were made in the source framework; a dict says nothing
        expected = of_framework(source_name, spec) if weights is None else None
    if expected is None:
        expected = assumed(spec)
        notes.append(f"the weights record no preprocessing: {expected.origin}")
    if size is not None:
        expected = expected.replace(size=(size, size))
    pixels = load_image(image)
    x = expected.apply(pixels)[None]
    report = compare(spec, weights=initial, inputs=x, source=source_name, targets=names, dtype=dtype, seed=seed,
                     tolerance=tolerance, k=k, device=device)
    report.weights, report.notes = record, notes + report.notes
    report.inputs = {"origin": f"{image} through {expected.name}", "shape": list(x.shape)}
    report.extra["preprocessing"] = {
        "image": str(image), "framework": source_name, "source": expected.to_dict(),
        "sides": effects(spec, initial, pixels, expected, source_name, names, device, size),
    }
    return report


def effects(spec, weights: Mapping[str, np.ndarray], pixels: np.ndarray, expected: Preprocessing, source: str,
            names: list[str], device: str, size: int | None) -> list[dict]:
    """Per framework, its users' habit and, where it differs from ``expected``, the logits' relative difference and
    the top-1 classes when the photograph goes through it instead: one float32 model of ``source`` runs both."""
    sides = []
    with frameworks.numerics([source], "float32", device):
        model = frameworks.load_checkpoints(source).model_from_weights(spec, as_float32(weights, spec))
        impl = frameworks.load(source)
        base = impl.features(model, expected.apply(pixels)[None])["fc"]
        for name in names:
            habit = of_framework(name, spec)
            if size is not None:
                habit = habit.replace(size=(size, size))
            side = {"framework": name, "preprocessing": habit.to_dict(), "same": habit.same_as(expected)}
            if not side["same"]:
                logits = impl.features(model, habit.apply(pixels)[None])["fc"]
                side.update(relative_difference=relative_error(logits, base),
                            top1=None if spec.headless else [int(np.argmax(base)), int(np.argmax(logits))])
            sides.append(side)
    return sides
