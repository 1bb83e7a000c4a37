"""The checkpoints people hold: a ResNet's keys under a wrapper's prefix, mmpretrain's classifier layout, torchvision
detection's body.*, an extra head key, a prefix only the user knows, a backbone without its classifier (read as a
feature extractor, num_classes=0); each converts and compares in all three frameworks, with a note saying what was
done, or is refused in one line saying what would help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import as_torch, random_images, torch_save
from shared import checkpoint, frameworks
from shared.checkpoint import Source
from shared.checkpoint.keys import unwrap
from shared.cli import main
from shared.errors import CheckpointError
from shared.parity import FIXED_FLOAT32
from shared.spec import get_spec
from shared.convert import convert
from shared.weights import canonical_shapes, randomize, relative_error

# narrow, so the three frameworks convert and compare it in seconds; every tensor random (BN statistics too)
SPEC = get_spec("resnet18", stem_width=8, widths=(8, 16, 32, 64), num_classes=10)
TARGETS = {"torch": "out.pt", "tf": "out.weights.h5", "jax": "out.msgpack"}  # one file of each framework's own


@pytest.fixture(scope="module")
def weights() -> dict:
    return randomize(SPEC, seed=21)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def mmpretrain(weights: dict) -> dict:
    """mmpretrain's ImageClassifier state_dict: the ResNet under backbone., its LinearClsHead's Linear at head.fc."""
    return {("head." + k) if k.startswith("fc.") else f"backbone.{k}": v for k, v in weights.items()}


def assert_converts_in_every_framework(capsys, path: Path, tmp_path: Path, expected: dict, *flags, note: str,
                                       spec=SPEC) -> None:
    for framework, name in TARGETS.items():
        code, out, err = run(capsys, "convert", path, tmp_path / name, *flags, "--json")
        report = json.loads(out)
        assert code == 0 and report["passed"], err
        assert report["verification"]["frameworks"][1] == framework and report["verification"]["weights_identical"]
        assert report["verification"]["output"] == ("pooled features" if spec.headless else "logits")
        assert any(note in n for n in report["notes"]), report["notes"]
        got, _ = checkpoint.load(tmp_path / name)
        keys = canonical_shapes(spec)
        assert set(keys) <= set(got) and all(np.array_equal(got[k], expected[k]) for k in keys)


def assert_compares_in_every_framework(capsys, path: Path, *flags, note: str, spec=SPEC) -> dict:
    code, out, err = run(capsys, "compare", "--weights", path, "--size", "32", *flags, "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"], err
    assert [r["framework"] for r in report["results"]] == ["torch", "tf", "jax"]
    assert any(note in n for n in report["notes"]), report["notes"]
    checked = [c["name"] for c in report["results"][1]["checks"]]
    assert checked == ["stem", *(b.prefix for b in spec.blocks()), "avgpool", *([] if spec.headless else ["fc"])]
    return report


def test_mmpretrain_layout_converts_and_compares(capsys, tmp_path, impls, weights):
    path = torch_save(as_torch(mmpretrain(weights)), tmp_path / "mmpretrain_resnet18.pth")
    assert_converts_in_every_framework(capsys, path, tmp_path, weights, note="mmpretrain's ImageClassifier layout")
    assert_compares_in_every_framework(capsys, path, note="its classifier fc from head.fc")


def detection_body(torchvision, with_classifier: bool):
    """torchvision detection's layout: BackboneWithFPN keeps the ResNet's IntermediateLayerGetter at body (to layer4,
    beside fpn.*); the same getter asked for the fc output keeps the classifier, still under body."""
    from torch import nn
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    from helpers import randomize_torch

    net = randomize_torch(torchvision.models.resnet18(num_classes=10))
    if with_classifier:
        return net, nn.ModuleDict({"body": IntermediateLayerGetter(net, {"fc": "logits"})})
    return net, BackboneWithFPN(net, {"layer4": "0"}, [64, 128, 256, 512], 32)


def test_detection_body_layout_converts_and_compares_to_torchvision(capsys, tmp_path, impls, torchvision):
    import torch

    net, wrapped = detection_body(torchvision, with_classifier=True)
    assert all(k.startswith("body.") for k in wrapped.state_dict())
    path = torch_save(wrapped.state_dict(), tmp_path / "body.pth")
    expected = {k: v.numpy() for k, v in net.state_dict().items()}
    assert_converts_in_every_framework(capsys, path, tmp_path, expected, note="'body.' prefix every key carries")
    x = random_images(get_spec("resnet18"), batch=2)
    with torch.no_grad():
        truth = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()  # torchvision's own logits
    for framework, name in TARGETS.items():
        model = checkpoint.load_model(framework, tmp_path / name)
        logits = frameworks.load(framework).features(model, x)["fc"]
        assert relative_error(logits, truth) <= FIXED_FLOAT32, framework
    assert_compares_in_every_framework(capsys, path, note="IntermediateLayerGetter")


# ----------------------------------------------------------------------------- headless backbones (no fc)

HEADLESS = SPEC.replace(num_classes=0)
HEADLESS_NOTE = "a headless backbone, read as a feature extractor (num_classes=0)"


def torchvision_features(net, x: np.ndarray) -> np.ndarray:
    """torchvision's own pooled layer4 features (what a headless backbone outputs) for an NHWC batch."""
    import torch

    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2))
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
            t = getattr(net, name)(t)
        return torch.flatten(t, 1).numpy()


def assert_features_in_every_framework(tmp_path: Path, truth: np.ndarray, x: np.ndarray) -> None:
    for framework, name in TARGETS.items():
        model = checkpoint.load_model(framework, tmp_path / name)
        feats = frameworks.load(framework).features(model, x)
        assert feats["flatten"].shape == truth.shape and relative_error(feats["flatten"], truth) <= FIXED_FLOAT32
        assert np.array_equal(feats["fc"], feats["flatten"]), framework  # no classifier: the output is the features


def test_a_detection_backbone_with_its_fpn_converts_and_compares_headless(capsys, tmp_path, impls, torchvision):
    """BackboneWithFPN's state_dict: body.* (the ResNet to layer4, no fc) beside fpn.*: the prefix and the FPN are
    the user's to name, then it is a feature extractor in all three frameworks, with torchvision's own features."""
    net, fpn = detection_body(torchvision, with_classifier=False)
    path = torch_save(fpn.state_dict(), tmp_path / "fpn.pth")
    code, out, err = run(capsys, "convert", path, tmp_path / "out.pt")
    assert code == 2 and out == "" and "--drop-unexpected drops them" in err
    assert not (tmp_path / "out.pt").exists()
    flags = ("--strip-prefix", "body.", "--drop-unexpected")
    expected = {k: v.numpy() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert_converts_in_every_framework(capsys, path, tmp_path, expected, *flags, note=HEADLESS_NOTE, spec=HEADLESS)
    x = random_images(get_spec("resnet18"), batch=2)
    assert_features_in_every_framework(tmp_path, torchvision_features(net, x), x)
    report = assert_compares_in_every_framework(capsys, path, *flags, note=HEADLESS_NOTE, spec=HEADLESS)
    assert any(k.startswith("fpn.") for k in report["weights"]["dropped"])
    assert all(r["top1_agree"] is None for r in report["results"])  # no classes to agree on


@pytest.mark.slow  # the body.* layout of the detection backbone above, without its FPN
def test_an_intermediate_layer_getter_body_converts_headless(capsys, tmp_path, impls, torchvision):
    """torchvision detection's IntermediateLayerGetter alone, under body. (body.conv1.weight, body.layer1.0...,
    no fc): the prefix goes without asking, the missing fc makes it headless."""
    from torch import nn
    from torchvision.models._utils import IntermediateLayerGetter

    from helpers import randomize_torch

    net = randomize_torch(torchvision.models.resnet18(num_classes=10))
    body = nn.ModuleDict({"body": IntermediateLayerGetter(net, {"layer4": "0"})})
    assert "body.conv1.weight" in body.state_dict() and not any("fc." in k for k in body.state_dict())
    path = torch_save(body.state_dict(), tmp_path / "body.pth")
    expected = {k: v.numpy() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert_converts_in_every_framework(capsys, path, tmp_path, expected, note=HEADLESS_NOTE, spec=HEADLESS)
    x = random_images(get_spec("resnet18"), batch=2)
    assert_features_in_every_framework(tmp_path, torchvision_features(net, x), x)
    assert_compares_in_every_framework(capsys, path, note="'body.' prefix every key carries", spec=HEADLESS)


def test_an_mmpretrain_backbone_without_a_classifier_converts_and_compares_headless(capsys, tmp_path, impls):
    """mmpretrain's self-supervised layout: backbone.* beside a neck and a head with no fc (MoCo's projection MLP):
    strip backbone., drop the rest, and it is a feature extractor."""
    weights = randomize(HEADLESS, seed=22)
    held = {f"backbone.{k}": v for k, v in weights.items()}
    held.update({"neck.mlp.0.weight": np.ones((32, 64), np.float32), "head.loss.scale": np.ones(1, np.float32)})
    path = torch_save(as_torch(held), tmp_path / "mocov2.pth")
    flags = ("--strip-prefix", "backbone.", "--drop-unexpected")
    assert_converts_in_every_framework(capsys, path, tmp_path, weights, *flags, note=HEADLESS_NOTE, spec=HEADLESS)
    report = assert_compares_in_every_framework(capsys, path, *flags, note=HEADLESS_NOTE, spec=HEADLESS)
    assert sorted(report["weights"]["dropped"]) == ["head.loss.scale", "neck.mlp.0.weight"]
    # the classifier layout still reads with its fc; the backbone alone reads headless
    assert Source.open(torch_save(as_torch(mmpretrain(randomize(SPEC, seed=3))), tmp_path / "cls.pth")).read().spec == SPEC
    only = torch_save(as_torch({f"backbone.{k}": v for k, v in weights.items()}), tmp_path / "only.pth")
    assert Source.open(only).read().spec == HEADLESS


def test_a_headless_backbone_is_refused_by_formats_that_always_hold_a_classifier(capsys, tmp_path, impls):
    path = torch_save(as_torch(randomize(HEADLESS, seed=23)), tmp_path / "headless.pth")
    code, out, err = run(capsys, "convert", path, tmp_path / "hf", "--to", "hf")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "is written with its classifier" in err and "write it as one of torch, safetensors, keras" in err
    assert not (tmp_path / "hf").exists()
    code, out, err = run(capsys, "compare", "--weights", path, "--train-steps", "1")
    assert code == 2 and "headless backbone (num_classes=0): no logits for a loss to train" in err


def test_timm_loads_a_headless_resnet50_strictly_from_what_we_write(tmp_path, timm):
    """timm's resnet50(num_classes=0), random, read and written by us: timm's own model loads it with strict=True
    and computes the same pooled features."""
    import torch

    from helpers import randomize_torch

    theirs = randomize_torch(timm.create_model("resnet50", num_classes=0))
    path = torch_save(theirs.state_dict(), tmp_path / "timm_headless.pth")
    x = random_images(get_spec("resnet50"), batch=2)
    with torch.no_grad():
        truth = theirs(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    for name in ("out.safetensors", "timm_dir"):
        report = convert(path, tmp_path / name, dst_format="timm" if name == "timm_dir" else None)
        assert report["passed"] and report["spec"]["num_classes"] == 0
        fresh = timm.create_model("resnet50", num_classes=0).eval()
        file = tmp_path / name / "model.safetensors" if name == "timm_dir" else tmp_path / name
        fresh.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(file).items()}, strict=True)
        with torch.no_grad():
            got = fresh(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        assert got.shape == (2, 2048) and np.array_equal(got, truth)


def test_an_unexpected_key_is_dropped_only_when_asked_and_listed(capsys, tmp_path, impls, weights):
    path = torch_save(as_torch({**weights, "head.extra.weight": np.ones(3, np.float32)}), tmp_path / "extra.pth")
    code, out, err = run(capsys, "convert", path, tmp_path / "out.pt")
    assert code == 2 and "1 key no ResNet has (head.extra.weight): --drop-unexpected drops it" in err
    code, out, err = run(capsys, "convert", path, tmp_path / "out.pt", "--drop-unexpected", "--json")
    report = json.loads(out)
    assert code == 0 and report["dropped"] == ["head.extra.weight"], err
    assert any(n.startswith("dropped 1 key resnet18 has no place for, as asked (--drop-unexpected)") for n in report["notes"])
    code, out, err = run(capsys, "convert", path, tmp_path / "out.msgpack", "--drop-unexpected")
    assert code == 0 and "note: dropped 1 key" in out and "head.extra.weight" in out
    report = assert_compares_in_every_framework(capsys, path, "--drop-unexpected", note="dropped 1 key")
    assert report["weights"]["dropped"] == ["head.extra.weight"]


def test_a_prefix_only_the_user_knows(capsys, tmp_path, impls, weights):
    path = torch_save(as_torch({f"student.net.{k}": v for k, v in weights.items()}), tmp_path / "distilled.pth")
    code, _, err = run(capsys, "convert", path, tmp_path / "out.pt")
    assert code == 2 and "every key starts with 'student.net.': --strip-prefix student.net. removes it" in err
    assert_converts_in_every_framework(capsys, path, tmp_path, weights, "--strip-prefix", "student.net.", "--force",
                                       note="removed the prefix 'student.net.' from 102 of 102 keys, as asked")
    assert_compares_in_every_framework(capsys, path, "--strip-prefix", "student.net.", note="as asked")
    code, out, err = run(capsys, "convert", path, tmp_path / "x.pt", "--strip-prefix", "teacher.")
    assert code == 2 and out == "" and "--strip-prefix 'teacher.': no key starts with it" in err


def test_key_options_need_weights(capsys):
    code, out, err = run(capsys, "compare", "--arch", "resnet20", "--drop-unexpected")
    assert code == 2 and "read the keys of --weights FILE" in err


# ----------------------------------------------------------------------------- the unwrapping rules, on their own


def keys_of(found: tuple[dict, list[str]]) -> list[str]:
    return sorted(found[0])


def test_prefixes_are_removed_only_when_every_key_carries_them():
    canonical = {"conv1.weight": 1, "fc.weight": 2, "fc.bias": 3}
    # DDP around torch.compile around a Lightning module: three prefixes, one note each
    nested, notes = unwrap({f"module._orig_mod.model.{k}": v for k, v in canonical.items()})
    assert nested == canonical and [n.split("'")[1] for n in notes] == ["module.", "_orig_mod.", "model."]
    partly = {"backbone.conv1.weight": 1, "fc.weight": 2}  # not every key: nothing removed, nothing noted
    assert unwrap(partly) == (partly, [])
    assert unwrap(canonical) == (canonical, [])


def test_the_mmpretrain_layout_keeps_other_head_keys_for_the_strict_check():
    found, notes = unwrap({"backbone.conv1.weight": 1, "head.fc.weight": 2, "head.fc.bias": 3, "head.extra.weight": 4})
    assert sorted(found) == ["conv1.weight", "fc.bias", "fc.weight", "head.extra.weight"]
    assert "1 other head or neck keys left as they are" in notes[0]
    # without head.fc it is no classifier: nothing is guessed
    headless = {"backbone.conv1.weight": 1, "head.extra.weight": 4}
    assert unwrap(headless) == (headless, [])


def test_an_explicit_prefix_that_would_merge_two_keys_is_refused():
    with pytest.raises(CheckpointError, match="two keys would both be named 'conv1.weight'"):
        unwrap({"conv1.weight": 1, "x.conv1.weight": 2}, strip_prefix="x.")


def test_python_api_takes_the_same_options(tmp_path, impls, weights):
    path = torch_save(as_torch({**{f"net.{k}": v for k, v in weights.items()}, "net.aux.weight": np.ones(2)}),
                      tmp_path / "api.pth")
    source = Source.open(path, strip_prefix="net.", drop_unexpected=True).read()
    assert source.spec == SPEC and source.dropped == ["aux.weight"]
    got, _ = checkpoint.load(path, strip_prefix="net.", drop_unexpected=True)
    assert set(got) == set(weights)
    model = checkpoint.load_model("jax", path, strip_prefix="net.", drop_unexpected=True)
    assert np.array_equal(frameworks.load("jax").export_weights(model)["fc.bias"], weights["fc.bias"])
