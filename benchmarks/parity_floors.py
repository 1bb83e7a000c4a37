"""The rule's calibration sweep: honest ports checked by ``compare`` and ``train_parity`` on cases nobody tuned.

Each case is drawn from a ``numpy.random.SeedSequence`` whose entropy the output prints (pass ``--entropy`` to
redraw the same cases, to run a sweep in shards, or to resume it): a preset (every preset of ``shared.spec``
with at most ``--max-blocks`` residual blocks, so new presets join by themselves), a source framework, a dtype,
an input side and a batch, a kind of weights and, in eval mode, a kind of input:

- weights: ``random`` (every tensor random, ``shared.weights.randomize``), ``fresh`` (the source framework's
  ``build_model``: BN scale 1, bias 0, statistics 0 and 1), ``trained`` (a few epochs of the digits recipe in
  PyTorch through ``shared.train.fit``, one channel in and ten classes out; for the CIFAR family and resnet18,
  ``TRAINED``; cached under ``--cache``);
- inputs: ``normal`` (standard normal), ``images`` (uniform in [0, 1], normalised with ImageNet's mean and
  spread), ``photos`` (random crops of scikit-image's bundled photographs, normalised alike).

Every check is the library's own verdict (``compare`` for eval, ``train_parity`` for training steps): an honest
framework that FAILs is a false FAIL. One JSON line per case goes to ``--out`` (resumed: cases already there are
skipped), holding each target framework's verdict and every tensor's error, floor and limit; ``--summary`` prints,
per mode and dtype, the largest honest ratio ``(error - atol) / floor`` with its case and the false-FAIL count.

    python benchmarks/parity_floors.py --eval 40 --train 6 --out runs/floors.jsonl          # a small sweep
    python benchmarks/parity_floors.py --eval 1000 --train 150 --entropy E --shard 1/4 --out runs/floors-1.jsonl
    python benchmarks/parity_floors.py --summary runs/floors-*.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shared.spec import ResNetSpec, get_spec, list_specs

SOURCES = ("torch", "tf", "jax")
DTYPES = ("float32", "bfloat16", "float16")
WEIGHTS = ("random", "fresh", "trained")
INPUTS = ("normal", "images", "photos")
BATCHES = (1, 2, 8)
# input sides: odd feature maps (76 -> 19 -> 10) and even ones, a stem's worth of downsampling at least
SIZES = {"imagenet": (32, 40, 56, 64, 76, 96), "deep": (32, 40, 56, 64, 76, 96), "cifar": (16, 24, 32, 40)}
TRAIN_STEPS = (1, 2, 3, 5)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "camera", "coins", "moon", "clock", "grass", "gravel", "brick")
TRAINED_EPOCHS = 3
# trained weights: the CIFAR family (the digits recipe's own network and its deeper siblings) and the smallest
# ImageNet-stem network; training the larger presets takes hours on two cores
TRAINED = ("resnet20", "resnet32", "resnet44", "resnet56", "seed_tf_cifar", "resnet18")


@dataclass(frozen=True)
class Case:
    mode: str  # "eval" or "train"
    arch: str
    source: str
    dtype: str
    size: int
    batch: int
    weights: str
    inputs: str  # eval only; training runs train_parity's standard-normal batches
    seed: int
    steps: int = 0

    @property
    def label(self) -> str:
        what = f"{self.inputs} x{self.batch}" if self.mode == "eval" else f"{self.steps} steps x{self.batch}"
        return f"{self.mode} {self.arch} {self.size}px {what} {self.weights} weights from {self.source} {self.dtype} seed {self.seed}"


def presets(max_blocks: int) -> list[str]:
    """Every preset of ``shared.spec`` small enough to sweep (at most ``max_blocks`` residual blocks)."""
    return [n for n in list_specs() if sum(get_spec(n).layers) <= max_blocks]


def draw_cases(entropy: int, mode: str, count: int, *, dtypes=DTYPES, archs: list[str] | None = None,
               max_blocks: int = 16, trained: tuple[str, ...] = TRAINED) -> list[Case]:
    """``count`` cases of ``mode``, each drawn from its own child of SeedSequence(entropy, mode)."""
    archs = archs or presets(max_blocks)
    root = np.random.SeedSequence(entropy, spawn_key=(0 if mode == "eval" else 1,))
    cases = []
    for child in root.spawn(count):
        rng = np.random.default_rng(child)
        weights = str(rng.choice(WEIGHTS))
        trainable = [a for a in archs if a in trained]
        if weights == "trained" and not trainable:
            weights = "random"
        arch = str(rng.choice(trainable if weights == "trained" else archs))
        spec = get_spec(arch)
        if not spec.batch_norm and weights == "fresh":
            weights = "random"  # without BN a freshly built network's activations vanish or explode
        cases.append(Case(mode, arch, str(rng.choice(SOURCES)), str(rng.choice(list(dtypes))),
                          int(rng.choice(SIZES[spec.stem])), int(rng.choice(BATCHES if mode == "eval" else (2, 4, 8))),
                          weights, str(rng.choice(INPUTS)) if mode == "eval" else "normal", int(rng.integers(2**31)),
                          int(rng.choice(TRAIN_STEPS)) if mode == "train" else 0))
    return cases


def draw_eval_cases(entropy: int, count: int, dtypes=DTYPES) -> list[Case]:
    return draw_cases(entropy, "eval", count, dtypes=dtypes)


# --------------------------------------------------------------------------- weights and inputs


def case_spec(case: Case) -> ResNetSpec:
    """The preset; trained weights come from digits, one channel in and ten classes out."""
    if case.weights == "trained":
        return get_spec(case.arch, in_channels=1, num_classes=10)
    return get_spec(case.arch)


def case_weights(case: Case, spec: ResNetSpec, cache: str = "runs/parity_floors_cache") -> dict[str, np.ndarray]:
    from shared import frameworks
    from shared.weights import randomize

    if case.weights == "random":
        return randomize(spec, case.seed)
    if case.weights == "fresh":
        impl = frameworks.load(case.source)
        return impl.export_weights(impl.build_model(spec, seed=case.seed % 2**31))
    return trained_weights(case.arch, cache)


def trained_weights(arch: str, cache: str) -> dict[str, np.ndarray]:
    """``arch`` after TRAINED_EPOCHS epochs of the digits recipe in PyTorch (``shared.train.fit``), cached."""
    from safetensors.numpy import load_file

    from shared.recipe import get_recipe
    from shared.train import CANONICAL_FILE, fit

    out = Path(cache) / "trained" / arch
    if not (out / CANONICAL_FILE).exists():
        recipe = get_recipe("digits", arch=arch, epochs=TRAINED_EPOCHS)
        for lr in (recipe.optimizer.lr, recipe.optimizer.lr / 10, recipe.optimizer.lr / 100):
            try:
                fit("torch", recipe.replace(lr=lr), out=str(out), seed=0, stream=sys.stderr)
                break
            except Exception as exc:  # a preset without BN diverges at the recipe's lr
                print(f"training {arch} at lr {lr}: {exc}; lower lr", file=sys.stderr)
    return load_file(str(out / CANONICAL_FILE))


def case_inputs(case: Case, spec: ResNetSpec) -> np.ndarray:
    """An NHWC float32 batch of the case's kind."""
    rng = np.random.default_rng([case.seed, 1])
    shape = (case.batch, case.size, case.size, spec.in_channels)
    if case.inputs == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if case.inputs == "images":
        x = rng.uniform(0.0, 1.0, shape)
    else:
        x = np.stack([photo_crop(str(rng.choice(PHOTOS)), case.size, spec.in_channels, rng) for _ in range(case.batch)])
    mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if spec.in_channels == 3 else (IMAGENET_MEAN.mean(), IMAGENET_STD.mean()))
    return ((x - mean) / std).astype(np.float32)


def photo_crop(name: str, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (half the short side or more) of a scikit-image sample photograph, size x size, in [0, 1]."""
    import skimage.color
    import skimage.data
    import skimage.transform

    img = np.asarray(getattr(skimage.data, name)(), np.float64) / 255.0
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if channels == 1 and img.ndim == 3:
        img = skimage.color.rgb2gray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], channels, axis=2)
    short = min(img.shape[:2])
    side = int(rng.integers(short // 2, short + 1))
    top, left = (int(rng.integers(0, img.shape[i] - side + 1)) for i in (0, 1))
    crop = img[top: top + side, left: left + side]
    return skimage.transform.resize(crop, (size, size, channels), anti_aliasing=True)


# --------------------------------------------------------------------------- one case through the library


def run_case(case: Case, cache: str) -> dict:
    from shared.errors import ResNetParityError
    from shared.parity import compare
    from shared.parity.training import train_parity

    spec = case_spec(case)
    weights = case_weights(case, spec, cache)
    start = time.perf_counter()
    try:
        if case.mode == "eval":
            report = compare(spec, weights=weights, inputs=case_inputs(case, spec), source=case.source,
                             dtype=case.dtype, seed=case.seed)
        else:
            report = train_parity(spec, case.steps, weights=weights, source=case.source, dtype=case.dtype,
                                  batch=case.batch, size=case.size, seed=case.seed)
    except ResNetParityError as exc:  # e.g. a kernel a framework lacks for this dtype: no verdict, recorded as such
        return {"case": asdict(case), "label": case.label, "seconds": time.perf_counter() - start, "error": str(exc),
                "rule": {"kind": "none"}, "notes": [], "checks": {}}
    out = {"case": asdict(case), "label": case.label, "seconds": time.perf_counter() - start,
           "rule": report.rule, "notes": report.notes, "checks": {}}
    for r in report.results:
        if r.reference:
            continue
        out["checks"][r.framework] = {
            "passed": r.passed, "counts_match": r.counts_match,
            "tensors": [[c.name, c.error, c.floor, c.limit] for c in r.checks],
        }
    return out


# --------------------------------------------------------------------------- summary


def worst_ratio(tensors: list, atol: float) -> tuple[float, str]:
    """The largest (error - atol) / floor of a framework's tensors: the k it needs."""
    def ratio(error, floor):
        return (error - atol) / floor if floor else (0.0 if error <= atol else float("inf"))

    return max((ratio(e, f), n) for n, e, f, _ in tensors)


def summarise(records: list[dict]) -> str:
    rows: dict[tuple[str, str], dict] = {}
    for rec in records:
        case, rule = rec["case"], rec["rule"]
        if rule["kind"] != "floor":
            continue
        row = rows.setdefault((case["mode"], case["dtype"]), {"checks": 0, "fails": 0, "worst": (-1.0, ""), "cases": 0,
                                                             "seconds": 0.0, "k": rule["k"]})
        row["cases"] += 1
        row["seconds"] += rec["seconds"]
        for fw, check in rec["checks"].items():
            row["checks"] += 1
            row["fails"] += not check["passed"]
            ratio, tensor = worst_ratio(check["tensors"], rule["atol"])
            if ratio > row["worst"][0]:
                row["worst"] = (ratio, f"{fw} at {tensor}: {rec['label']}")
    lines = ["mode  dtype    |  k | framework-checks | false FAIL | largest honest ratio (its case) | s per case"]
    for (mode, dtype), row in sorted(rows.items()):
        lines.append(f"{mode:5} {dtype:8} | {row['k']:2g} | {row['checks']:16} | {row['fails']:10} | "
                     f"{row['worst'][0]:5.2f} ({row['worst'][1]}) | {row['seconds'] / row['cases']:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=40, help="eval cases to draw (each checks two target frameworks)")
    parser.add_argument("--train", type=int, default=6, help="training cases to draw")
    parser.add_argument("--entropy", type=int, default=None, help="SeedSequence entropy (default: fresh; printed)")
    parser.add_argument("--shard", default="1/1", help="i/n: run every n-th case starting at the i-th (1-based)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--presets", nargs="+", help="draw from these presets only (default: every preset that fits)")
    parser.add_argument("--max-blocks", type=int, default=16, help="presets with more residual blocks are left out")
    parser.add_argument("--trained", nargs="+", default=list(TRAINED),
                        help="presets drawn with trained weights (each trained once, cached: half an hour or more)")
    parser.add_argument("--cache", default="runs/parity_floors_cache", help="where the trained weights are kept")
    parser.add_argument("--out", default="runs/parity_floors.jsonl", help="one JSON line per case, appended (resumes)")
    parser.add_argument("--summary", nargs="+", metavar="JSONL", help="only print the summary of these files")
    args = parser.parse_args()
    if args.summary:
        print(summarise([json.loads(line) for path in args.summary for line in open(path) if line.strip()]))
        return
    try:
        index, shards = (int(v) for v in args.shard.split("/"))
        assert 1 <= index <= shards
    except (ValueError, AssertionError):
        parser.error(f"--shard {args.shard}: write i/n with 1 <= i <= n")
    entropy = np.random.SeedSequence(args.entropy).entropy
    drawn = {"dtypes": args.dtypes, "archs": args.presets, "max_blocks": args.max_blocks, "trained": tuple(args.trained)}
    cases = [*draw_cases(entropy, "eval", args.eval, **drawn), *draw_cases(entropy, "train", args.train, **drawn)]
    cases = cases[index - 1:: shards]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["label"] for line in out.open() if line.strip()} if out.exists() else set()
    print(f"entropy {entropy}; shard {index}/{shards}: {len(cases)} cases, {len(done & {c.label for c in cases})} "
          f"already in {out}", flush=True)
    records = [json.loads(line) for line in out.open() if line.strip()] if out.exists() else []
    for n, case in enumerate(cases, start=1):
        if case.label in done:
            continue
        rec = run_case(case, args.cache)
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        records.append(rec)
        verdicts = ", ".join(f"{fw} {'PASS' if c['passed'] else 'FAIL'} {worst_ratio(c['tensors'], rec['rule'].get('atol', 0))[0]:.2f}"
                             for fw, c in rec["checks"].items())
        print(f"[{n}/{len(cases)}] {case.label}: {verdicts} ({rec['seconds']:.0f} s)", flush=True)
    print(summarise(records))


if __name__ == "__main__":
    main()
