"""Checkpoint conversion: read one format, write another, and show both files compute the same.

The new file is written beside DST under a temporary name, read back, run on one random batch
against the source weights, and renamed into place only if it agrees: a failed conversion leaves
no DST behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from . import frameworks
from .checkpoint import Destination, Format, Source, as_float32, dtype_of
from .errors import FrameworkUnavailable, ResNetParityError
from .parity.rule import FIXED_FLOAT32
from .spec import ResNetSpec, describe
from .weights import canonical_shapes, relative_error

VERIFY_SIZE = 64  # input height and width for verification (smaller presets use their own size): every weight takes part
VERIFY_BATCH = 2
SCHEMA_VERSION = 1  # of the report (the JSON convert --json prints)


ONNX_RUNTIME = "onnxruntime"


def verifier(fmt: Format) -> str:
    """The framework that loads a file of ``fmt`` for verification (framework-free formats: PyTorch when installed);
    a file that cannot be read back (ONNX) runs in onnxruntime."""
    if not fmt.readable:
        return ONNX_RUNTIME
    if fmt.framework is not None:
        return fmt.framework
    installed = frameworks.installed()
    if not installed:
        raise ResNetParityError("verification needs PyTorch, TensorFlow or JAX installed; pass verify_output=False")
    return "torch" if "torch" in installed else installed[0]


def logits(framework: str, weights: dict[str, np.ndarray], spec: ResNetSpec, x: np.ndarray) -> np.ndarray:
    """The logits of ``x`` from a float32 model of ``framework`` holding ``weights`` (a headless backbone's: its pooled
    features)."""
    model = frameworks.load_checkpoints(framework).model_from_weights(spec, as_float32(weights, spec))
    return frameworks.load(framework).features(model, x)["fc"]


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's logits for an NHWC batch from the graph at ``path``, which takes PyTorch's NCHW."""
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise FrameworkUnavailable("verifying an ONNX file needs onnxruntime: pip install 'resnet-parity[onnx]'; "
                                   "or pass verify_output=False") from exc

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def output_error(a: np.ndarray, b: np.ndarray) -> float:
    """relative_error, where NaN/Inf (allowed with allow_nonfinite=True) must sit in the same places."""
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(finite_a, finite_b) or not np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True):
        return float("inf")
    return relative_error(a[finite_a], b[finite_b])


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, NaN payloads included."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


def verify(source: Source, written: Source, spec: ResNetSpec, pair: tuple[str, str], *, keep_dtype: bool,
           allow_nonfinite: bool, seed: int) -> dict:
    """Read SRC and the written file (both opened, not yet read), load each into its framework, and run the same
    random batch through both."""
    size = min(spec.image_size, VERIFY_SIZE)
    x = np.random.default_rng(seed).standard_normal((VERIFY_BATCH, size, size, spec.in_channels)).astype(np.float32)
    weights, _ = source.read(spec).prepared(keep_dtype=keep_dtype, allow_nonfinite=allow_nonfinite)
    if written.format.readable:
        back = written.read(spec).weights
        output = logits(pair[1], back, spec, x)
        same = all(identical(back[k], weights[k]) for k in canonical_shapes(spec))
    else:  # BN folded into the convs: no weights to compare, only what the graph computes
        output, same = onnx_logits(written.path, x), None
    error = output_error(output, logits(pair[0], weights, spec, x))
    tol = FIXED_FLOAT32
    return {
        "frameworks": list(pair), "input_shape_nhwc": list(x.shape),
        "output": "pooled features" if spec.headless else "logits", "relative_error": error, "tolerance": tol,
        "weights_identical": same, "passed": bool(error <= tol),
    }


def convert(
    src: str | Path, dst: str | Path, *, arch: str | ResNetSpec | None = None, src_format: str | None = None,
    dst_format: str | None = None, force: bool = False, verify_output: bool = True, keep_dtype: bool = False,
    allow_nonfinite: bool = False, seed: int = 0, strip_prefix: str | None = None, drop_unexpected: bool = False,
) -> dict:
    """Convert ``src`` to ``dst``; a JSON-able report. Bad input raises CheckpointError (one line).

    ``strip_prefix`` and ``drop_unexpected`` as for ``shared.checkpoint.Source.open``: the report lists what they
    did. SRC's preprocessing (what it records, or its library's documented default) is reported and written into
    DST where its format has a place for it."""
    source = Source.open(src, src_format, option="src_format", strip_prefix=strip_prefix,
                         drop_unexpected=drop_unexpected)
    fin = source.format  # as detected: the report names it, whatever the reader then tells
    destination = Destination.open(dst, dst_format, force=force, inputs={"SRC": source.path}, option="dst_format")
    checkers = (verifier(fin), verifier(destination.format)) if verify_output else ()
    timings: dict[str, float] = {}
    with timed(timings, "import_s"):
        for name in {fin.framework, destination.format.framework, *checkers} - {None, ONNX_RUNTIME}:
            frameworks.load_checkpoints(name)
    with timed(timings, "read_s"):
        weights, dtype_notes = source.read(arch).prepared(keep_dtype=keep_dtype, allow_nonfinite=allow_nonfinite,
                                                          target=destination.format)
        source.weights = {}  # the prepared dict holds what is needed; let the rest go before writing
        dtype = dtype_of(weights, source.spec)
    verification = None
    with destination.staged() as stage:
        with timed(timings, "write_s"):  # the writer may empty `weights`: verification reads SRC again, as a user would
            written = stage.write(weights, source.spec, consume=True, preprocessing=source.preprocessing)
        size = _size(stage.path)
        if verify_output:
            with timed(timings, "verify_s"):
                verification = verify(source.reopened(fin), Source(stage.path, destination.format), source.spec,
                                      checkers, keep_dtype=keep_dtype, allow_nonfinite=allow_nonfinite, seed=seed)
        passed = verification is None or verification["passed"]
        if passed:
            stage.commit()
    spec, keys = source.spec, canonical_shapes(source.spec)
    pre = source.preprocessing
    return {
        "schema_version": SCHEMA_VERSION, "src": str(source.path), "dst": str(destination.path), "from": fin.name,
        "to": destination.format.name, "arch": spec.name, "architecture": describe(spec),
        "spec": dataclasses.asdict(spec), "notes": source.notes + dtype_notes, "dropped": source.dropped,
        "preprocessing": {"source": None if pre is None else pre.to_dict(), "written": written if passed else []},
        "tensors": len(keys), "values": int(sum(int(np.prod(s)) for s in keys.values())), "dtype": dtype, "bytes": size,
        "written": passed, "verification": verification, "timings": timings, "passed": passed,
    }


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record the seconds the block takes as ``timings[key]``."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
