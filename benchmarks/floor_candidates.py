"""Candidate floors side by side (issue 18, Deliver 1): for honest ports and for the suite's deliberate mistakes,
each tensor's error against the float64 truth and the reference's own errors under several kinds of floor sample.

Kinds of floor sample (each run is the reference in the dtype under test, against the truth from the unmoved
weights and inputs):
- ``one``: the reference's run alone (eval's floor before issue 18);
- ``inputs``: every input value moved by one or two units in the last place of the dtype (``rounded_otherwise``);
- ``params``: every parameter and BN statistic moved so;
- ``both``: both moved (``shared.parity.floor.sample``);
- ``mca``: Monte Carlo arithmetic, PyTorch only: the float64 reference with a relative error of up to one unit
  roundoff of the dtype injected at the output of every convolution, BN, ReLU, pool, addition and the classifier
  (forward hooks), weights and inputs rounded to the dtype first.

A method is a kind and a number of samples; its floor is the largest error over the reference's run and the
samples. The summary gives per method the largest honest ratio ``(error - atol) / floor`` and the smallest mistake
ratio (the worst tensor of each mistake, the smallest over mistakes), and the time the samples cost.

    PYTHONPATH=. python benchmarks/floor_candidates.py --cases issue --out runs/candidates_issue.json
    PYTHONPATH=. python benchmarks/floor_candidates.py --cases mistakes --out runs/candidates_mistakes.json
    PYTHONPATH=. python benchmarks/floor_candidates.py --summary runs/candidates_*.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_floors import case_inputs, case_spec, case_weights, draw_eval_cases  # noqa: E402

from shared import frameworks  # noqa: E402
from shared.parity.floor import UNIT_ROUNDOFF, rounded_otherwise, sample  # noqa: E402
from shared.parity import TOLERANCE  # noqa: E402
from shared.parity.eval import eval_tensors  # noqa: E402
from shared.spec import get_spec  # noqa: E402
from shared.weights import relative_error  # noqa: E402

KINDS = ("inputs", "params", "both", "mca")
SAMPLES = 8


def run(name: str, spec, weights, x, dtype: str) -> dict[str, np.ndarray]:
    impl = frameworks.load(name)
    with impl.numerics(dtype):
        return impl.features(frameworks.load_checkpoints(name).model_from_weights(spec, weights, dtype), x)


def mca_run(spec, weights, x, dtype: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """PyTorch in float64 with relative noise of up to one unit roundoff of ``dtype`` at every module's output."""
    import torch

    import pytorch_impl

    u = UNIT_ROUNDOFF[dtype]
    low = np.float32 if dtype == "float32" else np.float32  # mixed precision keeps float32 parameters
    wide = {k: np.asarray(v, low).astype(np.float64) for k, v in weights.items()}
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    with pytorch_impl.numerics("float64"):
        model = frameworks.load_checkpoints("torch").model_from_weights(spec, wide, "float64")

        def noisy(module, args, out):
            if isinstance(out, torch.Tensor):
                return out * (1 + u * (2 * torch.rand(out.shape, generator=gen, dtype=out.dtype) - 1))
            return out

        hooks = [m.register_forward_hook(noisy) for m in model.modules() if m is not model]
        try:
            return pytorch_impl.features(model, np.asarray(np.asarray(x, low), np.float64))
        finally:
            for h in hooks:
                h.remove()


def measure(spec, weights, x, dtype: str, source: str, targets: dict[str, object], seed: int, kinds=KINDS,
            samples: int = SAMPLES) -> dict:
    """Errors of the source, of each target (name -> factory or None for the framework's own) and of every sample."""
    tensors = eval_tensors(spec)
    wide = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    truth = run(source, spec, wide, np.asarray(x, np.float64), "float64")

    def errors(out):
        return [relative_error(out[t], truth[t]) for t in tensors]

    ref = run(source, spec, weights, x, dtype)
    out = {"tensors": tensors, "reference": errors(ref), "targets": {}, "samples": {}, "sample_s": {}}
    for label, factory in targets.items():
        name = label.split(":")[0]
        if factory is None:
            got = run(name, spec, weights, x, dtype)
        else:
            impl = frameworks.load(name)
            with impl.numerics(dtype):
                got = impl.features(factory(spec, weights, dtype), x)
        out["targets"][label] = errors(got)
    rng = np.random.default_rng(seed)
    for kind in kinds:
        if kind == "mca" and source != "torch":
            continue
        start = time.perf_counter()
        runs = []
        for _ in range(samples):
            if kind == "mca":
                runs.append(errors(mca_run(spec, weights, x, dtype, rng)))
                continue
            moved_w, (moved_x,) = sample(weights, [x], dtype, rng)
            runs.append(errors(run(source, spec, moved_w if kind != "inputs" else weights,
                                   moved_x if kind != "params" else x, dtype)))
        out["samples"][kind] = runs
        out["sample_s"][kind] = (time.perf_counter() - start) / samples
    return out


# --------------------------------------------------------------------------- the cases


def issue_cases() -> list[tuple[str, dict]]:
    """The issue's eval cases, with their exact weights and inputs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import random_images

    from shared.weights import randomize

    cases = []
    spec = get_spec("resnet20")
    cases.append(("resnet20 randomize(102) Flax -> Keras, random_images", dict(
        spec=spec, weights=randomize(spec, seed=102), x=random_images(spec), source="jax")))
    import pytorch_impl

    spec = get_spec("resnet18")
    fresh = pytorch_impl.export_weights(pytorch_impl.build_model("resnet18", seed=1))
    cases.append(("fresh resnet18 seed 1 torch, 64x64 random_images", dict(
        spec=spec, weights=fresh, x=random_images(spec, 64), source="torch")))
    spec = get_spec("resnet50")
    cases.append(("resnet50 224 batch 1 torch, randomize(7)", dict(
        spec=spec, weights=randomize(spec, seed=7), x=random_images(spec, 224, batch=1), source="torch")))
    for seed in range(5):
        cases.append((f"resnet18 64x64 batch 1 torch seed {seed}", dict(
            spec=spec18 if (spec18 := get_spec("resnet18")) else None, weights=randomize(spec18, seed=seed),
            x=np.random.default_rng(seed).standard_normal((1, 64, 64, 3)).astype(np.float32), source="torch")))
    return cases


def mistake_cases() -> list[tuple[str, dict]]:
    """tests/test_negative.py's and test_precision.py's deliberate eval mistakes, at the tests' settings (seed 3, 32x32)."""
    import ml_dtypes

    from shared.weights import randomize

    def wrong_spec(spec):
        return lambda _spec, weights, dtype, fw: frameworks.load_checkpoints(fw).model_from_weights(spec, weights, dtype)

    def changed(change):
        return lambda spec, weights, dtype, fw: frameworks.load_checkpoints(fw).model_from_weights(
            spec, change(dict(weights)), dtype)

    def swap(w):
        w["layer1.0.bn1.weight"], w["layer1.0.bn1.running_var"] = w["layer1.0.bn1.running_var"], w["layer1.0.bn1.weight"]
        return w

    def transpose_all(w):
        return {k: (v.transpose(0, 1, 3, 2) if v.ndim == 4 else v) for k, v in w.items()}

    def transpose_one(w):
        w["layer3.1.conv1.weight"] = np.ascontiguousarray(w["layer3.1.conv1.weight"].transpose(0, 1, 3, 2))
        return w

    def var_bf16(w):
        return {k: v.astype(ml_dtypes.bfloat16).astype(np.float32) if k.endswith("running_var") else v for k, v in w.items()}

    r18 = get_spec("resnet18")
    mistakes = [
        ("tf_same padding", "resnet18", wrong_spec(get_spec("resnet18", padding="tf_same")), ("float32", "bfloat16")),
        ("BN eps 1e-3", "resnet18", wrong_spec(get_spec("resnet18", bn_eps=1e-3)), ("float32",)),
        ("max-pool zero pad", "keras_resnet50v2", wrong_spec(get_spec("keras_resnet50v2", pool_zero_pad=False)), ("float32",)),
        ("stride on the 1x1", "resnet50", wrong_spec(get_spec("resnet50", stride_on="1x1")), ("float32",)),
        ("kernels WHIO", "resnet18", changed(transpose_all), ("float32",)),
        ("swapped BN gamma/var", "resnet18", changed(swap), ("float32",)),
        ("layer3.1 kernel transposed", "resnet18", changed(transpose_one), ("float32",)),
        ("running_var in bfloat16", "resnet18", changed(var_bf16), ("float32",)),
    ]
    cases = []
    for label, arch, factory, dtypes in mistakes:
        spec = get_spec(arch)
        x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype(np.float32)
        for dtype in dtypes:
            cases.append((f"{label} ({arch}, {dtype})", dict(spec=spec, weights=randomize(spec, 3), x=x, source="torch",
                                                               dtype=dtype, mistake=factory)))
    del r18
    return cases


# --------------------------------------------------------------------------- training


def measure_training(spec, weights, batches, recipe, dtype: str, source: str, steps: int, seed: int,
                     devices: int = 1, sync_bn: bool = False, kinds=("inputs", "both"), samples: int = SAMPLES,
                     mistakes=None) -> dict:
    """Training facts: the targets' errors, the reference's and each sample's (kind ``inputs``: reordered and
    inputs rounded otherwise, the floor before issue 18; ``both``: parameters and BN statistics too)."""
    tp = importlib.import_module("shared.parity.training")  # the package exports a function of that name

    checkpoints = tuple(sorted({1, steps}))
    reference = None if devices == 1 or sync_bn else tp.PerShard(source, devices)
    bn_batch = len(batches[0][0]) // (1 if reference is None else devices)
    size = batches[0][0].shape[1]

    def flat(trace):
        return tp.trace_tensors(trace, conv, spec, bn_batch, size)

    ref_trace = tp.trace_training(source, spec, weights, batches, recipe, dtype=dtype, record_steps=checkpoints,
                                  engine=reference)
    conv = ref_trace.convention
    wide = [(x.astype(np.float64), y) for x, y in batches]
    truth = flat(tp.trace_training(source, spec, {k: np.asarray(v, np.float64) for k, v in weights.items()}, wide,
                                   recipe, dtype="float64", record_steps=checkpoints, engine=reference))
    names = list(truth)

    def errors(trace):
        got = flat(trace)
        return [relative_error(got[n], truth[n]) for n in names]

    out = {"tensors": names, "reference": errors(ref_trace), "targets": {}, "samples": {}, "sample_s": {}}
    for label, make in (mistakes or {}).items():
        out["targets"][label] = errors(make(spec, weights, batches, recipe, checkpoints))
    for name in frameworks.FRAMEWORKS if mistakes is None else ():
        if name == source and devices == 1:
            continue
        if devices == 1:
            trace = tp.trace_training(name, spec, weights, batches, recipe, dtype=dtype, record_steps=checkpoints)
        else:
            trace = tp.trace_data_parallel(name, spec, weights, batches, recipe, devices=devices, sync_bn=sync_bn,
                                           dtype=dtype, record_steps=checkpoints)
        out["targets"][name] = errors(trace)
    rng = np.random.default_rng(seed)
    shards = 1 if reference is None else devices
    n = len(batches[0][0]) // shards
    keep = 1 - spec.bn_momentum

    def unshifted(got, shift):
        """The stored facts less the start's move: params@s - shift, BN statistics@s - keep^s * shift."""
        out = {}
        for name, value in got.items():
            fact, _, key = name.partition(" ")
            if "@" in fact and not fact.startswith("logits") and key in shift:
                step = int(fact.split("@")[1])
                value = value - (keep**step if fact.startswith("running") else 1.0) * shift[key]
            out[name] = value
        return out

    for kind in kinds:
        start = time.perf_counter()
        runs, shifted = [], []
        for _ in range(samples):
            order = np.concatenate([s * n + rng.permutation(n) for s in range(shards)])
            moved_w, moved_x = sample(weights, [x[order] for x, _ in batches], dtype, rng)
            run = tp.trace_training(source, spec, moved_w if kind == "both" else weights,
                                    [(mx, y[order]) for mx, (_, y) in zip(moved_x, batches)], recipe, dtype=dtype,
                                    record_steps=checkpoints, engine=reference)
            run.logits = run.logits[np.argsort(order)]
            runs.append(errors(run))
            if kind == "both":
                shift = {k: moved_w[k].astype(np.float64) - weights[k].astype(np.float64) for k in weights}
                got = unshifted(flat(run), shift)
                shifted.append([relative_error(got[t], truth[t]) for t in names])
        out["samples"][kind] = runs
        if shifted:
            out["samples"]["both-unshifted"] = shifted
        out["sample_s"][kind] = (time.perf_counter() - start) / samples
    return out


def training_mistakes() -> dict:
    """tests/test_training_parity.py's deliberate Keras mistakes, each a function returning its trace."""
    import dataclasses

    import keras

    from shared.recipe import learning_rates
    from shared.parity.training import trace_training
    from shared.weights import canonical_layers, resolve
    from tensorflow_impl.train import LearningRateTable, TorchSGD

    def keras_trace(spec, weights, batches, recipe, checkpoints, model=None, optimizer=None):
        return trace_training("tf", spec, weights, batches, recipe, record_steps=checkpoints, model=model,
                              optimizer=optimizer(recipe, len(batches)) if optimizer else None)

    def decoupled(spec, weights, batches, recipe, checkpoints):
        opt = recipe.optimizer
        sgd = TorchSGD(learning_rate=LearningRateTable(learning_rates(recipe, len(batches)), "float32"),
                       momentum=opt.momentum, nesterov=opt.nesterov, weight_decay=opt.weight_decay)
        return trace_training("tf", spec, weights, batches, recipe.replace(weight_decay=0.0), record_steps=checkpoints,
                              optimizer=sgd)

    def momentum(spec, weights, batches, recipe, checkpoints):
        model = frameworks.load("tf").build_model(spec)
        for layer in canonical_layers(spec):
            if layer.kind == "bn":
                resolve(model, layer.path).momentum = spec.bn_momentum
        return keras_trace(spec, weights, batches, recipe, checkpoints, model=model)

    def unconverted(spec, weights, batches, recipe, checkpoints):
        return dataclasses.replace(keras_trace(spec, weights, batches, recipe, checkpoints), convention="unbiased")

    def stock_sgd(spec, weights, batches, recipe, checkpoints):
        opt = recipe.optimizer
        sgd = keras.optimizers.SGD(learning_rate=LearningRateTable(learning_rates(recipe, len(batches)), "float32"),
                                   momentum=opt.momentum, nesterov=opt.nesterov)
        return trace_training("tf", spec, weights, batches, recipe, record_steps=checkpoints, optimizer=sgd)

    return {"tf: decoupled weight decay": decoupled, "tf: BN momentum not inverted": momentum,
            "tf: running_var unconverted": unconverted, "tf: stock Keras SGD, warm-up schedule": stock_sgd}


def training_cases(args) -> list[tuple[str, dict]]:
    from shared.parity.training import PARITY_RECIPE, random_batches
    from shared.weights import randomize

    cases = []
    spec = get_spec("resnet20")
    cases.append(("resnet20 3 steps, 2 devices per-replica BN, torch DDP (compare --devices 2)", dict(
        spec=spec, weights=randomize(spec, 0), batches=random_batches(spec, 3, 8, 32, 1, "float32"), steps=3,
        source="torch", devices=2, sync_bn=False)))
    cases.append(("resnet20 3 steps, 2 devices sync BN (compare --devices 2 --sync-bn)", dict(
        spec=spec, weights=randomize(spec, 0), batches=random_batches(spec, 3, 8, 32, 1, "float32"), steps=3,
        source="torch", devices=2, sync_bn=True)))
    for seed in args.train_seeds:
        for arch, size in (("resnet20", 32), ("resnet18", 64), ("resnet50", 64)):
            if arch not in args.train_archs:
                continue
            spec = get_spec(arch)
            cases.append((f"{arch} {size}px 5 steps batch 8 seed {seed} (compare --train-steps 5)", dict(
                spec=spec, weights=randomize(spec, seed), batches=random_batches(spec, 5, 8, size, seed + 1, "float32"),
                steps=5, source="torch", devices=1, sync_bn=False)))
    cases = [(label, {**c, "recipe": PARITY_RECIPE.replace(arch=c["spec"].name)}) for label, c in cases]
    return cases


def training_mistake_case() -> dict:
    """tests/test_training_parity.py's float32 configuration (resnet20, 16x16 batches of 4, 5 steps) with its
    warm-up recipe, where every mistake of ``training_mistakes`` shows."""
    from shared.recipe import SGD, Recipe, Schedule
    from shared.parity.training import random_batches
    from shared.weights import randomize

    spec = get_spec("resnet20")
    recipe = Recipe("warmup", "resnet20", "random", SGD(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-2),
                    label_smoothing=0.1, schedule=Schedule("cosine", warmup_steps=2))
    return dict(spec=spec, weights=randomize(spec, 1), batches=random_batches(spec, 5, 4, 16, 2, "float32"), steps=5,
                source="torch", devices=1, sync_bn=False, recipe=recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=["issue", "mistakes", "drawn", "train", "train-mistakes"], default="issue")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-archs", nargs="+", default=["resnet20", "resnet18"])
    parser.add_argument("--match", default="", help="only the training cases whose label holds this")
    parser.add_argument("--count", type=int, default=20, help="drawn cases")
    parser.add_argument("--entropy", type=int, default=None, help="the drawn cases' SeedSequence entropy (default: fresh)")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--out", help="append one JSON line per case here")
    parser.add_argument("--summary", nargs="+", metavar="JSON", help="only summarise these files")
    args = parser.parse_args()
    if args.summary:
        summarise([json.loads(line) for path in args.summary for line in open(path)])
        return
    if args.cases in ("train", "train-mistakes"):
        cases = training_cases(args) if args.cases == "train" else [("resnet20-f32 warm-up", training_mistake_case())]
        cases = [(label, c) for label, c in cases if args.match in label]
        for label, c in cases:
            start = time.perf_counter()
            mistakes = training_mistakes() if args.cases == "train-mistakes" else None
            got = measure_training(c["spec"], c["weights"], c["batches"], c["recipe"], "float32", c["source"], c["steps"],
                                   seed=zlib.crc32(label.encode()), devices=c["devices"], sync_bn=c["sync_bn"],
                                   samples=args.samples, mistakes=mistakes,
                                   kinds=[k for k in args.kinds if k in ("inputs", "both")])
            record = {"case": label, "dtype": "float32", "mode": "train", "source": c["source"],
                      "mistake": mistakes is not None, **got}
            print(f"{label}: {time.perf_counter() - start:.0f} s; "
                  + "; ".join(f"{m} {v:.2f}" for m, v in case_ratios(record).items()), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
        return
    if args.cases == "issue":
        cases = [(label, {**c, "dtype": d}) for label, c in issue_cases() for d in args.dtypes]
    elif args.cases == "mistakes":
        cases = mistake_cases()
    else:
        entropy = np.random.SeedSequence(args.entropy).entropy
        print(f"entropy {entropy}", flush=True)
        cases = []
        for case in draw_eval_cases(entropy, args.count, dtypes=args.dtypes):
            spec = case_spec(case)
            cases.append((case.label, dict(spec=spec, weights=case_weights(case, spec), x=case_inputs(case, spec),
                                           source=case.source, dtype=case.dtype)))
    records = []
    for label, c in cases:
        start = time.perf_counter()
        names = [n for n in frameworks.FRAMEWORKS if n != c["source"]]
        if "mistake" in c:
            targets = {n: (lambda s, w, d, n=n, f=c["mistake"]: f(s, w, d, n)) for n in names}
        else:
            targets = {n: None for n in names}
        got = measure(c["spec"], c["weights"], c["x"], c["dtype"], c["source"], targets, seed=zlib.crc32(label.encode()),
                      kinds=args.kinds, samples=args.samples)
        record = {"case": label, "dtype": c["dtype"], "source": c["source"], "mistake": "mistake" in c, **got}
        records.append(record)
        print(f"{label} [{c['dtype']}]: {time.perf_counter() - start:.0f} s; "
              + "; ".join(f"{m} {v:.2f}" for m, v in case_ratios(record).items()), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(record) + "\n")
    summarise(records)


# --------------------------------------------------------------------------- the methods


def floors(record: dict, kind: str, n: int) -> np.ndarray:
    """Per tensor: the largest error over the reference's run and the first ``n`` samples of ``kind``."""
    ref = np.array(record["reference"])
    if kind == "one" or n == 0:
        return ref
    runs = np.array(record["samples"][kind][:n])
    return np.maximum(ref, runs.max(axis=0))


def ratios(record: dict, kind: str, n: int, band: float | None = None, k: float | None = None,
           more: int | None = None) -> dict[str, float]:
    """Per target: the largest (error - atol) / floor; ``band``: a ratio in (k, band * k] is re-judged with ``more`` samples."""
    atol = TOLERANCE[record["dtype"]][record.get("mode", "eval")].atol
    floor = floors(record, kind, n)
    out = {}
    for label, errs in record["targets"].items():
        r = (np.array(errs) - atol) / floor
        if band is not None:
            grey = (r > k) & (r <= band * k)
            if grey.any():
                r = np.where(grey, (np.array(errs) - atol) / floors(record, kind, more), r)
        out[label] = float(r.max())
    return out


METHODS = {
    "one run": ("one", 0, {}),
    "inputs x4": ("inputs", 4, {}),
    "inputs x8": ("inputs", 8, {}),
    "params x4": ("params", 4, {}),
    "both x2": ("both", 2, {}),
    "both x4": ("both", 4, {}),
    "both x8": ("both", 8, {}),
    "both x4, band 2 -> x8": ("both", 4, {"band": 2.0, "more": 8}),
    "both, stored facts unshifted x4": ("both-unshifted", 4, {}),
    "both, stored facts unshifted x8": ("both-unshifted", 8, {}),
    "both x4, band 2 -> x16": ("both", 4, {"band": 2.0, "more": 16}),
    "mca x4": ("mca", 4, {}),
    "mca x8": ("mca", 8, {}),
}


def case_ratios(record: dict, k: float = 4.0) -> dict[str, float]:
    out = {}
    for method, (kind, n, extra) in METHODS.items():
        if kind not in ("one",) and kind not in record["samples"]:
            continue
        if "band" in extra:
            extra = {**extra, "k": TOLERANCE[record["dtype"]][record.get("mode", "eval")].k}
        if n > len(record["samples"].get(kind, [])) or extra.get("more", 0) > len(record["samples"].get(kind, [])):
            continue
        out[method] = max(ratios(record, kind, n, **extra).values())
    return out


def summarise(records: list[dict]) -> None:
    honest = [r for r in records if not r["mistake"]]
    wrong = [r for r in records if r["mistake"]]
    print("\nmethod                 | largest honest ratio (case)                        | smallest mistake ratio (case) "
          "| sample s (mean)")
    for method in METHODS:
        h = [(case_ratios(r).get(method), r["case"] + " " + r["dtype"]) for r in honest]
        h = [x for x in h if x[0] is not None]
        w = [(case_ratios(r).get(method), r["case"]) for r in wrong]
        w = [x for x in w if x[0] is not None]
        kind = METHODS[method][0]
        cost = [r["sample_s"][kind] * METHODS[method][1] for r in records if kind in r.get("sample_s", {})]
        hs = f"{max(h)[0]:7.2f} ({max(h)[1][:42]})" if h else "-"
        ws = f"{min(w)[0]:9.1f} ({min(w)[1][:30]})" if w else "-"
        print(f"{method:22} | {hs:50} | {ws:40} | {np.mean(cost) if cost else 0:.2f}")


if __name__ == "__main__":
    main()
