"""``resnet-parity bench``: the report's shape on a tiny run, and bad input as one line with exit code 2.

Speed itself is measured by the command (docs/speed.md), never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from types import SimpleNamespace

import pytest

from shared import frameworks
from shared.bench import bench
from shared.cli import main
from shared.contract import Bench, References, missing_members

TINY = ("--arch", "resnet20", "--batch", "2", "--size", "16", "--repeats", "1", "--min-round", "0")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", frameworks.installed())
def test_bench_modules_meet_the_contract(name):
    assert missing_members(frameworks.load_bench(name), Bench) == []


def test_json_report(capsys):
    code, out, err = run(capsys, *TINY, "--frameworks", "torch", "--json")
    report = json.loads(out)
    assert code == 0 and err == ""
    assert (report["arch"], report["batch"], report["size"], report["repeats"]) == ("resnet20", 2, 16, 1)
    roles = {(c["mode"], c["role"]) for c in report["candidates"]}
    assert roles == {("eval", "ours"), ("eval", "reference"), ("train", "ours"), ("train", "reference")}
    for c in report["candidates"]:
        assert len(c["times"]) == 1 and c["img_s"] > 0 and c["build_s"] >= 0 and c["first_call_s"] > 0
    assert {(r["framework"], r["mode"]) for r in report["ratios"]} == {("torch", "eval"), ("torch", "train")}
    assert all(r["low"] <= r["median"] <= r["high"] for r in report["ratios"])


def test_table_without_reference(capsys):
    code, out, err = run(capsys, *TINY, "--frameworks", "torch", "--mode", "eval", "--no-reference")
    assert code == 0 and err == ""
    assert "ours" in out and "reference" not in out.split("\n", 1)[1]


def test_mixed_precision_runs_ours_only():
    report = bench("resnet20", targets=["torch"], batch=2, size=16, mode="eval", dtype="bfloat16", repeats=1,
                   min_round_s=0)
    assert [c.role for c in report.candidates] == ["ours"] and "float32 only" in report.notes[0]


@pytest.mark.parametrize("args, message", [
    (("--batch", "0"), "argument --batch: 0 is out of range"),
    (("--repeats", "0"), "argument --repeats: 0 is out of range"),
    (("--frameworks", "mxnet"), "unknown framework 'mxnet'"),
])
def test_bad_input_is_one_line(capsys, args, message):
    code, out, err = run(capsys, "--arch", "resnet20", *args)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_usage_errors_exit_2(capsys):
    for args in (("--arch", "resnet21"), ("--arch", "resnet20", "--dtype", "float64"), ("--arch", "resnet20", "--mode", "x")):
        assert main(["bench", *args]) == 2
    capsys.readouterr()


@pytest.mark.parametrize("name", frameworks.installed())
def test_reference_modules_meet_the_contract(name):
    assert missing_members(frameworks.load_references(name), References) == []


@pytest.mark.parametrize("ours_s, reference_s", [(0.0, 0.004), (0.004, 0.0)])
def test_a_faster_ours_reads_above_one(monkeypatch, ours_s, reference_s):
    """The ratio is the reference's time over ours: speed, not time. Pinned with steps of known duration."""
    def sleeping(seconds: float):
        return lambda: time.sleep(seconds)

    monkeypatch.setattr(frameworks, "load_bench", lambda name: SimpleNamespace(ours=lambda *a, **k: sleeping(ours_s)))
    monkeypatch.setattr(frameworks, "load_references", lambda name: SimpleNamespace(
        references=lambda spec, size: ([("reference", lambda: None)], []),
        reference_step=lambda build, *a, **k: sleeping(reference_s)))
    report = bench("resnet20", targets=["torch"], batch=2, size=16, mode="eval", repeats=3, min_round_s=0)
    (ratio,) = report.ratios
    assert (ratio.median > 1) == (ours_s < reference_s) and (ratio.high > 1) == (ours_s < reference_s)


def test_without_a_references_module_bench_times_ours_alone(monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "pytorch_impl.references" else found(name, *args))
    monkeypatch.delitem(sys.modules, "pytorch_impl.references", raising=False)
    report = bench("resnet20", targets=["torch"], batch=2, size=16, mode="eval", repeats=1, min_round_s=0)
    assert [c.role for c in report.candidates] == ["ours"]
    assert report.notes == ["PyTorch: no reference models installed (pytorch_impl.references)"]


@pytest.mark.parametrize("arch", ["resnext50_32x4d", "wide_resnet50_2"])
def test_the_family_is_benched_against_torchvision_and_says_the_others_have_none(arch):
    """torchvision builds the same network as ours (every state_dict key and shape, on the meta device);
    keras.applications and the Flax example have no ResNeXt or Wide ResNet, and bench says so."""
    import torch

    from shared.spec import get_spec
    from shared.weights import canonical_shapes

    spec = get_spec(arch)
    (label, build), = frameworks.load_references("torch").references(spec, 64)[0]
    with torch.device("meta"):
        state = build().state_dict()
    assert label == f"torchvision {arch}"
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert shapes == canonical_shapes(spec)
    for name in ("tf", "jax"):
        assert frameworks.load_references(name).references(spec, 64) == ([], [f"no reference model for {arch}"])
