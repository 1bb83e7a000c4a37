"""How a photograph becomes a model's input: resizing and cropping, channel order, normalisation.

Weights moved from one library to another without their preprocessing give wrong answers with perfect parity:
keras.applications' ResNet50 expects Caffe-style BGR with the ImageNet means subtracted, torchvision RGB scaled to
[0, 1] and normalised by the ImageNet mean and std. ``Preprocessing`` holds either in one form; the conventions
below are the libraries' documented defaults (their sources quoted beside each); ``shared.libraries`` reads and
writes the ones files record (Hugging Face, timm, keras-hub). Images are decoded and resized with Pillow,
imported only then (``pip install 'resnet-parity[image]'``): torchvision, timm, transformers' PIL image processors
and keras.utils.load_img resize with Pillow too, so their inputs are reproduced to float32 rounding; the Flax
example and keras-hub resize with TensorFlow's kernels (and crop before they resize), which Pillow's filters of the
same name approach but do not reproduce.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import FrameworkUnavailable, ParityInputError
from .spec import ResNetSpec

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")  # Pillow's filters of these names
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # of [0, 1] RGB pixels


@dataclass(frozen=True)
class Preprocessing:
    """Pixels (0..255, in ``channels`` order) become ``(pixel - mean) / std`` per channel, after resizing: the image
    scaled, its aspect kept, to cover ``size / crop_pct`` (rounded down), then its centre ``size`` cut out; with
    ``crop_pct`` None the whole image squashed to ``size``."""

    name: str
    origin: str  # what records it, or whose documented default it is
    size: tuple[int, int]  # height, width of the model's input
    crop_pct: float | None
    interpolation: str
    channels: str  # 'RGB' or 'BGR'
    mean: tuple[float, ...]  # in 0..255 pixel units, in ``channels`` order
    std: tuple[float, ...]
    # where the centre crop starts when the margin is odd: torchvision's CenterCrop rounds (H - h) / 2, transformers'
    # center_crop rounds it down
    crop_offset: str = "round"

    def __post_init__(self):
        problems = []
        if len(self.size) != 2 or min(self.size) < 1:
            problems.append(f"size {self.size}")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            problems.append(f"crop_pct {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} (known: {', '.join(INTERPOLATIONS)})")
        if self.channels not in ("RGB", "BGR"):
            problems.append(f"channels {self.channels!r}")
        if self.crop_offset not in ("round", "floor"):
            problems.append(f"crop_offset {self.crop_offset!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in (*self.mean, *self.std)) \
                or min(self.std) <= 0:
            problems.append(f"mean {self.mean} and std {self.std}")
        if problems:
            raise ValueError(f"preprocessing {self.name!r}: {'; '.join(problems)}")

    def same_as(self, other: Preprocessing) -> bool:
        """Whether both turn any image into the same input (name and origin aside; values to 1e-6, as configs
        round them)."""
        def close(a, b) -> bool:
            return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b))

        crops = (self.crop_pct is None) == (other.crop_pct is None) and (
            self.crop_pct is None or math.isclose(self.crop_pct, other.crop_pct, rel_tol=1e-6))
        flip = self.channels != other.channels
        offsets = self.crop_pct is None or self.crop_offset == other.crop_offset
        return (self.size == other.size and crops and offsets and self.interpolation == other.interpolation
                and not flip and close(self.mean, other.mean) and close(self.std, other.std))

    def describe(self) -> str:
        """'torchvision ImageNet (RGB, (x - (123.675, 116.28, 103.53)) / (58.395, 57.12, 57.375); ...)'."""
        h, w = self.size
        fit = (f"squashed to {h}x{w}" if self.crop_pct is None else
               f"resized to cover {math.floor(h / self.crop_pct)}x{math.floor(w / self.crop_pct)}, "
               f"centre {h}x{w} cut out")
        values = ", ".join(f"{m:g}" for m in self.mean), ", ".join(f"{s:g}" for s in self.std)
        return (f"{self.name} ({self.channels}, (pixel - ({values[0]})) / ({values[1]}); {fit}, {self.interpolation}; "
                f"{self.origin})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: Mapping) -> Preprocessing:
        """The inverse of ``to_dict``; ValueError (or KeyError, TypeError) for a bad record."""
        values = {f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields or f.default is dataclasses.MISSING}
        for name in ("size", "mean", "std"):
            values[name] = tuple(values[name])
        return cls(**values)

    def replace(self, **changes) -> Preprocessing:
        return dataclasses.replace(self, **changes)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """An RGB uint8 image (H, W, 3) as the model's float32 input (height, width, 3)."""
        from PIL import Image  # (an import error is the caller's: see load_image)

        pil = Image.fromarray(np.asarray(image, np.uint8), "RGB")
        h, w = self.size
        resample = getattr(Image.Resampling, self.interpolation.upper())
        if self.crop_pct is None:
            pil = pil.resize((w, h), resample)
        else:
            pil = _resize_to_cover(pil, math.floor(h / self.crop_pct), math.floor(w / self.crop_pct), resample)
            if self.crop_offset == "round":
                top, left = round((pil.height - h) / 2), round((pil.width - w) / 2)
            else:
                top, left = (pil.height - h) // 2, (pil.width - w) // 2
            pil = pil.crop((left, top, left + w, top + h))
        x = np.asarray(pil, np.float64)
        if self.channels == "BGR":
            x = x[..., ::-1]
        return ((x - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)


def _resize_to_cover(pil, height: int, width: int, resample):
    """``pil`` scaled, its aspect kept, so that it covers ``height`` x ``width``: the side that needs the larger scale
    gets exactly its length, the other ``int`` of its scaled length (torchvision's Resize of the shorter side)."""
    if height / pil.height >= width / pil.width:
        size = (int(height * pil.width / pil.height), height)
    else:
        size = (width, int(width * pil.height / pil.width))
    return pil.resize(size, resample)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """A photograph (JPEG, PNG, ...) as an RGB uint8 array (H, W, 3); ParityInputError naming the file if it is none."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ModuleNotFoundError as exc:
        raise FrameworkUnavailable("reading images needs Pillow: pip install 'resnet-parity[image]'") from exc
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ParityInputError(f"image={path}: not a readable image: {exc}") from exc


def _pixels(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(255 * v for v in values)


# torchvision's ImageNet weights: transforms.ImageClassification(crop_size=224, resize_size=256), bilinear:
# the shorter side resized to 256, the centre 224x224 cut out, ToTensor's [0, 1], then the ImageNet mean and std
TORCHVISION = Preprocessing(
    "torchvision ImageNet", "torchvision's documented ImageNet transform", (224, 224), 224 / 256, "bilinear", "RGB",
    _pixels(IMAGENET_MEAN), _pixels(IMAGENET_STD))
# keras.applications.resnet.preprocess_input: imagenet_utils mode 'caffe' (RGB -> BGR, these means subtracted, no
# scaling), after keras.utils.load_img(path, target_size=(224, 224)), whose interpolation defaults to 'nearest'
KERAS_CAFFE = Preprocessing(
    "keras.applications caffe", "keras.applications.resnet.preprocess_input, after keras.utils.load_img",
    (224, 224), None, "nearest", "BGR", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
# keras.applications.resnet_v2.preprocess_input: mode 'tf', x / 127.5 - 1
KERAS_TF = Preprocessing(
    "keras.applications tf", "keras.applications.resnet_v2.preprocess_input, after keras.utils.load_img",
    (224, 224), None, "nearest", "RGB", (127.5,) * 3, (127.5,) * 3)
# the Flax ImageNet example's input_pipeline.preprocess_for_eval: the centre IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING)
# of the shorter side (224 / 256) resized to 224 bicubic, then MEAN_RGB and STDDEV_RGB (the ImageNet ones x 255)
FLAX_EXAMPLE = Preprocessing(
    "Flax ImageNet example", "the Flax ImageNet example's input pipeline", (224, 224), 224 / 256, "bicubic", "RGB",
    _pixels(IMAGENET_MEAN), _pixels(IMAGENET_STD))
# timm's ResNets without a pretrained_cfg of their own: resnet.py's _cfg (crop_pct 0.875, bilinear, ImageNet)
TIMM_RESNET = Preprocessing(
    "timm ResNet default", "timm's resnet.py _cfg", (224, 224), 0.875, "bilinear", "RGB",
    _pixels(IMAGENET_MEAN), _pixels(IMAGENET_STD))


def keras_applications(spec: ResNetSpec) -> Preprocessing:
    """keras.applications' preprocess_input for ``spec``: 'tf' mode for the V2 (pre-activation) ResNets, else 'caffe'."""
    return (KERAS_TF if spec.preact else KERAS_CAFFE).replace(size=(spec.image_size, spec.image_size))


def of_framework(framework: str, spec: ResNetSpec) -> Preprocessing:
    """What a user of ``framework`` applies to a ResNet by habit: torchvision's transform in PyTorch,
    keras.applications' preprocess_input in Keras, the Flax ImageNet example's pipeline in JAX."""
    found = {"torch": TORCHVISION, "tf": keras_applications(spec), "jax": FLAX_EXAMPLE}[framework]
    return found.replace(size=(spec.image_size, spec.image_size))


def assumed(spec: ResNetSpec) -> Preprocessing:
    """For a file that records no preprocessing and whose library documents none: torchvision's, which the
    canonical weights (torchvision's names and layouts) follow; the origin says it was assumed."""
    return TORCHVISION.replace(origin="not recorded in the file: torchvision's convention assumed",
                               size=(spec.image_size, spec.image_size))
