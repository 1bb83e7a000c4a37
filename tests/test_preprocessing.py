"""Preprocessing travels with the weights: each convention reproduces its library's own pipeline on real photographs
(scikit-image's sample data), files record it and convert carries it where the destination has a place, and
compare --image reports the preprocessing's effect apart from weight parity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import as_torch, torch_save
from shared import checkpoint
from shared.checkpoint import Source
from shared.cli import main
from shared.cli.report import format_preprocessing
from shared.errors import ParityInputError
from shared.libraries import hf, keras_hub, timm as timm_format
from shared.preprocessing import (
    IMAGENET_MEAN, IMAGENET_STD, KERAS_CAFFE, KERAS_TF, TORCHVISION, Preprocessing, load_image,
)
from shared.spec import get_spec
from shared.weights import randomize

PHOTOS = ("rocket.jpg", "chelsea.png")  # a JPEG and a PNG of different aspect ratios
SPEC = get_spec("resnet18", stem_width=8, widths=(8, 16, 32, 64), num_classes=10)


def photo(name: str) -> Path:
    import skimage.data

    return Path(os.path.dirname(skimage.data.__file__)) / name


def assert_reproduces(ours: np.ndarray, theirs: np.ndarray, p: Preprocessing) -> None:
    """Equal to float32 rounding: the library computes (x - mean) / std in float32 (a few roundings of values up to
    max|mean| / std and of the result), we in float64 rounded once, so they differ by at most
    eps * (2 max|result| + 2 max|mean| / min std)."""
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    eps = float(np.finfo(np.float32).eps)
    bound = eps * (2 * float(np.max(np.abs(theirs))) + 2 * max(p.mean) / min(p.std))
    assert float(np.max(np.abs(ours - theirs))) <= bound


@pytest.mark.parametrize("name", PHOTOS)
def test_torchvision_convention_is_torchvisions_transform(torchvision, name):
    from PIL import Image
    from torchvision import transforms as T

    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    theirs = transform(Image.open(photo(name)).convert("RGB")).numpy().transpose(1, 2, 0)
    assert_reproduces(TORCHVISION.apply(load_image(photo(name))), theirs, TORCHVISION)


@pytest.mark.parametrize("name", PHOTOS)
def test_keras_applications_conventions_are_their_preprocess_input(impls, name):
    import keras

    pixels = np.array(keras.utils.load_img(photo(name), target_size=(224, 224)), dtype=np.float32)
    for ours, theirs in ((KERAS_CAFFE, keras.applications.resnet.preprocess_input(pixels.copy())),
                         (KERAS_TF, keras.applications.resnet_v2.preprocess_input(pixels.copy()))):
        assert_reproduces(ours.apply(load_image(photo(name))), theirs, ours)


@pytest.mark.parametrize("name", PHOTOS)
def test_a_hugging_face_processor_config_reads_as_transformers_runs_it(transformers, name, tmp_path):
    from PIL import Image

    processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}, image_mean=list(IMAGENET_MEAN),
                                                       image_std=list(IMAGENET_STD))
    processor.save_pretrained(tmp_path)
    config = tmp_path / hf.PREPROCESSOR_FILE
    ours, notes = hf.preprocessing_from_config(json.loads(config.read_text()), config)
    assert notes == [] and (ours.crop_pct, ours.interpolation, ours.crop_offset) == (0.875, "bicubic", "floor")
    theirs = processor(Image.open(photo(name)).convert("RGB"), return_tensors="np")["pixel_values"][0]
    assert_reproduces(ours.apply(load_image(photo(name))), theirs.transpose(1, 2, 0), ours)


def test_timm_reads_the_pretrained_cfg_convert_writes(capsys, tmp_path, timm, impls):
    """A torchvision state_dict converted to a timm directory: timm loads it with its preprocessing, and its
    transform gives what the file's preprocessing does."""
    from PIL import Image

    spec = get_spec("resnet18", num_classes=10)
    torch_save(as_torch(randomize(spec, seed=2)), tmp_path / "r18.pth")
    assert main(["convert", str(tmp_path / "r18.pth"), str(tmp_path / "r18_timm"), "--to", "timm"]) == 0
    assert "wrote torchvision ImageNet into config.json's pretrained_cfg" in capsys.readouterr().out
    model = timm.create_model(f"local-dir:{tmp_path / 'r18_timm'}", pretrained=True)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    ours = Source.open(tmp_path / "r18_timm").read().preprocessing
    assert ours.same_as(TORCHVISION) and ours.origin == "recorded in config.json's pretrained_cfg"
    for name in PHOTOS:
        theirs = transform(Image.open(photo(name)).convert("RGB")).numpy().transpose(1, 2, 0)
        assert_reproduces(ours.apply(load_image(photo(name))), theirs, ours)


def test_keras_hub_normalises_as_the_preprocessor_convert_writes(capsys, tmp_path, keras_hub, impls):
    """keras-hub resizes with its own kernels; its normalisation (scale and offset per channel) is what the file's
    preprocessing says, on an image already at the model's size."""
    spec = get_spec("resnet18", num_classes=10)
    torch_save(as_torch(randomize(spec, seed=2)), tmp_path / "r18.pth")
    assert main(["convert", str(tmp_path / "r18.pth"), str(tmp_path / "r18_kh"), "--to", "keras-hub"]) == 0
    out = capsys.readouterr().out
    assert "wrote torchvision ImageNet as preprocessor.json" in out and "keeps 87.5% of it" in out
    classifier = keras_hub.models.ResNetImageClassifier.from_preset(str(tmp_path / "r18_kh"))
    ours = Source.open(tmp_path / "r18_kh").read().preprocessing
    assert ours.replace(crop_pct=0.875).same_as(TORCHVISION) and ours.crop_pct == 1.0
    pixels = np.asarray(load_image(photo("chelsea.png"))[:224, :224])
    theirs = np.asarray(classifier.preprocessor.image_converter(pixels[None].astype(np.float32)))[0]
    assert_reproduces(ours.apply(pixels), theirs, ours)


# ----------------------------------------------------------------------------- convert carries it, or says why not


@pytest.fixture(scope="module")
def kapp_file(impls, tmp_path_factory) -> Path:
    """keras.applications' ResNet50 (v1), random weights, as model.save_weights writes it: its documented
    preprocessing is 'caffe'."""
    from test_keras_applications import build_kapp, randomize_keras

    model = build_kapp("keras_resnet50")
    randomize_keras(model, seed=4)
    path = tmp_path_factory.mktemp("kapp") / "resnet50.weights.h5"
    model.save_weights(path)
    return path


def test_caffe_preprocessing_goes_where_it_can_and_is_named_where_it_cannot(capsys, tmp_path, kapp_file):
    code = main(["convert", str(kapp_file), str(tmp_path / "r50.safetensors"), "--no-verify", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and Preprocessing.from_dict(report["preprocessing"]["source"]).same_as(KERAS_CAFFE)
    assert report["preprocessing"]["written"] == ["wrote keras.applications caffe into the metadata of r50.safetensors"]
    back = Source.open(tmp_path / "r50.safetensors").read().preprocessing
    assert back.same_as(KERAS_CAFFE) and back.origin.startswith("recorded in r50.safetensors's metadata")
    code = main(["convert", str(kapp_file), str(tmp_path / "r50.pth"), "--no-verify"])
    assert code == 0 and "PyTorch state_dict has no place for preprocessing: prepare inputs as keras.applications " \
                         "caffe does" in capsys.readouterr().out
    # a network Hugging Face can build, that expects BGR: its image processors cannot say so
    notes = checkpoint.Destination.open(tmp_path / "bgr.safetensors").write(randomize(SPEC), SPEC,
                                                                            preprocessing=KERAS_CAFFE)
    assert notes == ["wrote keras.applications caffe into the metadata of bgr.safetensors"]
    code = main(["convert", str(tmp_path / "bgr.safetensors"), str(tmp_path / "bgr_hf"), "--to", "hf", "--no-verify"])
    out = capsys.readouterr().out
    assert code == 0 and "preprocessing: keras.applications caffe (BGR, (pixel - (103.939, 116.779, 123.68))" in out
    assert "transformers' image processors feed RGB, keras.applications caffe BGR: preprocessor_config.json not " \
           "written" in out and not (tmp_path / "bgr_hf" / hf.PREPROCESSOR_FILE).exists()


def test_hugging_face_directory_round_trip(capsys, tmp_path, transformers, impls):
    torch_save(as_torch(randomize(SPEC, seed=2)), tmp_path / "r18.pth")
    assert main(["convert", str(tmp_path / "r18.pth"), str(tmp_path / "r18_hf"), "--to", "hf", "--no-verify"]) == 0
    assert "the crop sits one pixel further up or left" in capsys.readouterr().out
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "r18_hf")
    assert type(processor).__name__.startswith("ConvNextImageProcessor") and processor.crop_pct == 0.875
    back = Source.open(tmp_path / "r18_hf").read().preprocessing
    assert back.replace(crop_offset="round").same_as(TORCHVISION)


def test_a_file_without_a_record_says_so(capsys, tmp_path, impls):
    spec = get_spec("resnet20")  # a CIFAR network: torchvision's ImageNet transform is no documented default for it
    torch_save(as_torch(randomize(spec)), tmp_path / "r20.pth")
    code = main(["convert", str(tmp_path / "r20.pth"), str(tmp_path / "r20.safetensors"), "--no-verify", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["preprocessing"] == {"source": None, "written": []}


def test_bad_records_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="std"):
        TORCHVISION.replace(std=(1.0, 0.0, 1.0))
    config = tmp_path / "preprocessor_config.json"
    found, notes = hf.preprocessing_from_config({"image_processor_type": "ViTImageProcessor"}, config)
    assert found is None and "its preprocessing was not read" in notes[0]
    found, notes = keras_hub.preprocessing_from_config({"image_size": None}, config)
    assert found is None and "a preprocessing not read here" in notes[0]
    found, notes = timm_format.preprocessing_from_config({"crop_mode": "border", "input_size": [3, 224, 224]}, config)
    assert found is None
    (tmp_path / "not.jpg").write_bytes(b"GIF89a broken")
    with pytest.raises(ParityInputError, match="not a readable image"):
        load_image(tmp_path / "not.jpg")


# ----------------------------------------------------------------------------- compare --image


def compare_image(capsys, *argv) -> tuple[dict, str]:
    """The JSON report, and the preprocessing section of the table as compare prints it."""
    assert main(["compare", *map(str, argv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    return report, "\n".join(format_preprocessing(report["extra"]["preprocessing"]))


def weight_parity_error(report: dict) -> float:
    return max(c["vs_source"] for r in report["results"] for c in r["checks"] if c["name"] == "fc")


def test_compare_image_with_a_keras_applications_v1_source(capsys, kapp_file):
    report, text = compare_image(capsys, "--weights", kapp_file, "--image", photo("rocket.jpg"), "--size", "64")
    found = report["extra"]["preprocessing"]
    assert Preprocessing.from_dict(found["source"]).same_as(KERAS_CAFFE.replace(size=(64, 64)))
    assert report["inputs"]["shape"] == [1, 64, 64, 3] and report["passed"]
    sides = {side["framework"]: side for side in found["sides"]}
    assert sides["tf"]["same"] and not sides["torch"]["same"] and not sides["jax"]["same"]
    # the preprocessing moves the logits by orders of magnitude more than the port does
    assert sides["torch"]["relative_difference"] > 1e3 * weight_parity_error(report)
    assert "PyTorch   users' torchvision ImageNet vs keras.applications caffe: logits differ by" in text
    assert "Keras/TF  users' keras.applications caffe: the same preprocessing" in text


def test_compare_image_with_a_torchvision_source(capsys, tmp_path, impls):
    torch_save(as_torch(randomize(SPEC, seed=6)), tmp_path / "r18.pth")
    report, text = compare_image(capsys, "--weights", tmp_path / "r18.pth", "--image", photo("chelsea.png"),
                                 "--size", "64")
    sides = {side["framework"]: side for side in report["extra"]["preprocessing"]["sides"]}
    assert sides["torch"]["same"] and not sides["tf"]["same"]
    assert sides["tf"]["relative_difference"] > 1e3 * weight_parity_error(report)
    assert "through torchvision ImageNet" in report["inputs"]["origin"]
    assert "Keras/TF  users' keras.applications caffe vs torchvision ImageNet: logits differ by" in text


def test_compare_image_refuses_what_it_cannot_run(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not a photograph")
    for argv, match in ((["--image", tmp_path / "notes.txt"], "--image"),
                        (["--image", photo("rocket.jpg"), "--train-steps", "1"], "--image is one photograph in eval mode"),
                        (["--image", photo("rocket.jpg"), "--arch", "d2l_resnet18"], "a photograph has 3 channels")):
        code = main(["compare", "--arch", "resnet20", *map(str, argv)])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.count("\n") == 1 and match in err, err


def test_the_table_keeps_the_preprocessing_apart_from_the_verdict(capsys, impls):
    """Random weights made in PyTorch: the photograph goes through torchvision's preprocessing, and the table's last
    line is the weight-parity verdict alone."""
    assert main(["compare", "--arch", "resnet20", "--frameworks", "torch", "tf", "--image", str(photo("rocket.jpg")),
                 "--size", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("preprocessing (apart from weight parity"))
    assert "through torchvision ImageNet" in lines[start] and lines[start + 1].endswith("the same preprocessing")
    assert lines[start + 2].startswith("  Keras/TF  users' keras.applications caffe vs torchvision ImageNet")
    assert lines[-1] == "weight parity: all frameworks agree"
