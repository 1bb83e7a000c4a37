"""torchvision's ResNeXts and Wide ResNets and timm's SE and ECA ResNets against ours, both ways: the logits' errors.

For each model the library builds it (every tensor random, BN statistics included: ``tests/library_models.py``)
and ``torch.save``s its state_dict, as its users do. The library's float64 run of the same model is the truth.

- library -> ours: each of our frameworks reads the file (the preset inferred from the weights) and runs the batch
  in float32; printed: its relative error against the library's float32 logits, and against the truth next to the
  library's own float32 error there (the floor; ``ratio`` = ours / floor, and whether the float32 rule of
  ``shared.parity`` passes); and the same weights in float64, against the truth (the bound: 1e-12).
- ours -> library: each framework's export (``export_weights``) written as the library loads it (torchvision: a
  .pth state_dict; timm: our ``timm`` format, a .safetensors) and loaded by a new model of the library's with
  ``strict=True``; printed: that model's logits against our framework's, and whether they are bit for bit the
  library's own logits from before.

``--counts``: instead, each preset's parameters and BN running statistics (``count_parameters``) next to those of
the library's own model (built on the meta device: shapes only).

    PYTHONPATH=.:tests python benchmarks/family_parity.py [--size 80] [--models NAME ...] [--counts]

80 px: odd maps (5 -> 3) in the last stage, where ResNet-D's ceil-mode average pool decides.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pytorch_impl.references import install_torchvision_shim
from shared import checkpoint, frameworks
from shared.parity import check_tensors, rule_for
from shared.spec import get_spec
from shared.weights import count_parameters, relative_error

from library_models import randomized

FRAMEWORKS = list(frameworks.FRAMEWORKS)
# each preset, and the library whose model it is (under the preset's name)
MODELS = {
    "resnext50_32x4d": "torchvision", "resnext101_32x8d": "torchvision", "resnext101_64x4d": "torchvision",
    "wide_resnet50_2": "torchvision", "wide_resnet101_2": "torchvision",
    "seresnet50": "timm", "seresnext50_32x4d": "timm", "ecaresnet50d": "timm", "ecaresnet50t": "timm",
}


def library_model(name: str):
    if MODELS[name] == "timm":
        import timm

        return timm.create_model(name)
    import torchvision

    return getattr(torchvision.models, name)()


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def load_back(name: str, path: Path):
    """A new model of the library's with the file we wrote loaded strictly, in eval mode."""
    import torch

    model = library_model(name)
    if MODELS[name] == "timm":
        import timm

        timm.models.load_checkpoint(model, str(path), strict=True)
    else:
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return model.eval()


def measure(name: str, folder: Path, x: np.ndarray) -> list[dict]:
    import torch

    model = randomized(library_model(name))
    torch.save(model.state_dict(), folder / "library.pth")
    reference = torch_logits(model, x)
    truth = torch_logits(copy.deepcopy(model).double(), x.astype(np.float64))
    source = checkpoint.Source.open(folder / "library.pth").read()
    spec, weights = source.spec, source.float32()
    assert spec == get_spec(name), f"inferred {spec.name}, not {name}"
    rule, rule64 = rule_for("float32", "eval", None), rule_for("float64", "eval", None)
    rows = []
    for fw in FRAMEWORKS:
        start = time.perf_counter()
        impl, build = frameworks.load(fw), frameworks.load_checkpoints(fw).model_from_weights
        ours = build(spec, weights)
        logits = impl.features(ours, x)["fc"]
        (check,) = check_tensors(["fc"], {"fc": logits}, {"fc": reference}, {"fc": truth}, rule)
        with impl.numerics("float64"):
            wide = impl.features(build(spec, {k: v.astype(np.float64) for k, v in weights.items()}, "float64"),
                                 x.astype(np.float64))
        (check64,) = check_tensors(["fc"], wide, {"fc": truth}, None, rule64)
        written = folder / (f"{fw}.safetensors" if MODELS[name] == "timm" else f"{fw}.pth")
        checkpoint.Destination.open(written, "timm" if MODELS[name] == "timm" else "torch", force=True).write(
            impl.export_weights(ours), spec)
        back = torch_logits(load_back(name, written), x)
        rows.append({
            "model": name, "library": MODELS[name], "framework": fw, "vs_library": check.vs_source,
            "vs_truth": check.error, "floor": check.floor, "ratio": check.ratio, "rule": check.passed,
            "float64_vs_truth": check64.error, "float64_rule": check64.passed,
            "back_vs_ours": relative_error(back, logits), "back_identical": bool(np.array_equal(back, reference)),
        })
        print(f"{name} in {frameworks.LABELS[fw]}: {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def counts(names: list[str]) -> None:
    import torch

    print("| preset | library | parameters: ours | library's | BN statistics: ours | library's |")
    print("|---" * 6 + "|")
    for name in names:
        with torch.device("meta"):
            model = library_model(name)
        stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
        params, our_stats = count_parameters(get_spec(name))
        print(f"| {name} | {MODELS[name]} | {params:,} | {sum(p.numel() for p in model.parameters()):,} "
              f"| {our_stats:,} | {stats:,} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=80, help="input height and width (batch 2)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), metavar="NAME")
    parser.add_argument("--counts", action="store_true", help="print the parameter counts only")
    args = parser.parse_args()
    install_torchvision_shim()
    if args.counts:
        counts(args.models)
        return 0
    x = np.random.default_rng(0).standard_normal((2, args.size, args.size, 3)).astype(np.float32)
    rows = []
    with frameworks.quiet_native_stderr():
        for name in args.models:
            with tempfile.TemporaryDirectory() as folder:
                rows += measure(name, Path(folder), x)
    print(f"batch 2, {args.size}x{args.size}, float32 unless the column says float64; relative errors max|a-b|/max|b|")
    print("| model | library | framework | library -> ours: vs library | vs float64 truth | library's own (floor) "
          "| ratio | rule | float64 vs truth | ours -> library (strict): vs ours | = library's own bits |")
    print("|---" * 11 + "|")
    for r in rows:
        print(f"| {r['model']} | {r['library']} | {frameworks.LABELS[r['framework']]} | {r['vs_library']:.1e} "
              f"| {r['vs_truth']:.1e} | {r['floor']:.1e} | {r['ratio']:.2f} | {'pass' if r['rule'] else 'FAIL'} "
              f"| {r['float64_vs_truth']:.1e} | {r['back_vs_ours']:.1e} | {'yes' if r['back_identical'] else 'no'} |")
    return 0 if all(r["rule"] and r["float64_rule"] and r["back_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
