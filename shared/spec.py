"""Framework-free description of every ResNet variant; the only source of numbers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

BlockKind = Literal["basic", "bottleneck"]
StemKind = Literal["imagenet", "cifar"]
ShortcutKind = Literal["projection", "pad", "avgpool_pad"]


@dataclass(frozen=True)
class ResNetSpec:
    """One ResNet: every number and every structural choice the three models read.

    Field meanings where a reader could guess wrong:
    - ``stem``: "imagenet" = conv 7x7/2 + BN + ReLU + max-pool 3x3/2; "cifar" = conv 3x3/1 + BN + ReLU.
    - ``shortcut``: used where the channel count changes. "projection" = 1x1 conv (+ BN when
      ``shortcut_bn``); "pad" = option A of He et al. 2016 §4.2 (subsample, zero-pad channels);
      "avgpool_pad" = the TF seed's 2x2 average pool, then zero-pad channels. Where only the
      resolution changes, the shortcut subsamples (Keras ResNetV2's 1x1 max-pool).
    - ``stride_on``: which bottleneck conv strides: "3x3" (v1.5, torchvision) or "1x1" (v1, Keras).
    - ``stride_block``: which block of a stage strides: "first" (torchvision) or "last" (Keras V2).
    - ``conv_bias``: True puts a bias on every conv; False only on convs not followed by BN
      (a bias right before BN is redundant, and that rule reproduces every published variant).
    - ``padding``: "symmetric" pads k//2 on each side like PyTorch; "tf_same" is TensorFlow's
      'same', which pads bottom/right more at stride 2 (kept only for the TF seed network).
    - ``pool_zero_pad``: Keras applications pads the stem max-pool with zeros, not -inf; after a
      ReLU that is the same, in V2 (no ReLU before the pool) it is not.
    - ``bn_momentum`` follows PyTorch: the weight of the *new* batch (Keras/Flax use 1 - it).
    """

    name: str
    block: BlockKind
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    stem: StemKind = "imagenet"
    stem_width: int = 64
    shortcut: ShortcutKind = "projection"
    shortcut_bn: bool = True
    stride_on: Literal["3x3", "1x1"] = "3x3"
    stride_block: Literal["first", "last"] = "first"
    conv_bias: bool = False
    batch_norm: bool = True
    preact: bool = False
    relu_after_add: bool = True
    padding: Literal["symmetric", "tf_same"] = "symmetric"
    pool_zero_pad: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    in_channels: int = 3
    num_classes: int = 1000
    image_size: int = 224
    source: str = ""

    def __post_init__(self) -> None:
        if not (len(self.layers) == len(self.widths) == len(self.strides)):
            raise ValueError(f"{self.name}: layers, widths and strides differ in length")
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"{self.name}: unknown block {self.block!r}")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"{self.name}: unknown stem {self.stem!r}")
        if self.shortcut not in ("projection", "pad", "avgpool_pad"):
            raise ValueError(f"{self.name}: unknown shortcut {self.shortcut!r}")
        if self.padding not in ("symmetric", "tf_same"):
            raise ValueError(f"{self.name}: unknown padding {self.padding!r}")
        for field in ("in_channels", "num_classes", "stem_width"):
            if getattr(self, field) < 1:
                raise ValueError(f"{self.name}: {field} must be >= 1, got {getattr(self, field)}")

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def final_width(self) -> int:
        return self.widths[-1] * self.expansion

    @property
    def num_stages(self) -> int:
        return len(self.layers)

    def has_bias(self, followed_by_bn: bool) -> bool:
        """Whether a conv carries a bias (see ``conv_bias``)."""
        return self.conv_bias or not (self.batch_norm and followed_by_bn)

    def blocks(self) -> list[BlockPlan]:
        """Every residual block in order, with its channels, stride and shortcut."""
        plans = []
        in_ch = self.stem_width
        for stage, (n, width, stride) in enumerate(zip(self.layers, self.widths, self.strides)):
            out_ch = width * self.expansion
            for index in range(n):
                strided = index == (0 if self.stride_block == "first" else n - 1)
                s = stride if strided else 1
                if in_ch != out_ch:
                    shortcut = self.shortcut
                elif s != 1:
                    shortcut = "subsample"
                else:
                    shortcut = "identity"
                if self.block == "basic":
                    convs = ((in_ch, width, 3, s), (width, out_ch, 3, 1))
                else:
                    s1, s3 = (s, 1) if self.stride_on == "1x1" else (1, s)
                    convs = ((in_ch, width, 1, s1), (width, width, 3, s3), (width, out_ch, 1, 1))
                plans.append(BlockPlan(f"layer{stage + 1}.{index}", in_ch, out_ch, s, shortcut, convs))
                in_ch = out_ch
        return plans

    def replace(self, **overrides) -> ResNetSpec:
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class BlockPlan:
    """One block as the models build it; derived from a spec, never written by hand."""

    prefix: str
    in_channels: int
    out_channels: int
    stride: int
    shortcut: Literal["identity", "subsample", "projection", "pad", "avgpool_pad"]
    convs: tuple[tuple[int, int, int, int], ...]  # the residual branch: (in, out, kernel, stride) each


_TORCHVISION = "torchvision (He et al. 2016, v1.5)"
_KERAS_V1 = dict(block="bottleneck", stride_on="1x1", conv_bias=True, bn_eps=1.001e-5, source="keras.applications (v1)")
_KERAS_V2 = dict(
    block="bottleneck", stride_block="last", strides=(2, 2, 2, 1), preact=True, shortcut_bn=False,
    pool_zero_pad=True, bn_eps=1.001e-5, source="keras.applications (v2, He et al. 2016b)",
)
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_IMAGENET_STRIDES = (1, 2, 2, 2)


def _imagenet(name: str, block: str, layers: tuple[int, ...], **kw) -> ResNetSpec:
    kw.setdefault("strides", _IMAGENET_STRIDES)
    kw.setdefault("source", _TORCHVISION)
    return ResNetSpec(name=name, block=block, layers=layers, widths=_IMAGENET_WIDTHS, **kw)


def _cifar(name: str, n: int) -> ResNetSpec:
    return ResNetSpec(
        name=name, block="basic", layers=(n, n, n), widths=(16, 32, 64), strides=(1, 2, 2),
        stem="cifar", stem_width=16, shortcut="pad", num_classes=10, image_size=32,
        source="He et al. 2016 §4.2 (CIFAR-10, option A)",
    )


PRESETS: dict[str, ResNetSpec] = {
    s.name: s
    for s in [
        _imagenet("resnet18", "basic", (2, 2, 2, 2)),
        _imagenet("resnet34", "basic", (3, 4, 6, 3)),
        _imagenet("resnet50", "bottleneck", (3, 4, 6, 3)),
        _imagenet("resnet101", "bottleneck", (3, 4, 23, 3)),
        _imagenet("resnet152", "bottleneck", (3, 8, 36, 3)),
        *(_cifar(f"resnet{6 * n + 2}", n) for n in (3, 5, 7, 9, 18, 200)),
        _imagenet(
            "d2l_resnet18", "basic", (2, 2, 2, 2), conv_bias=True, shortcut_bn=False,
            in_channels=1, num_classes=10, source="seed tutorials 000/002/003/004 (d2l)",
        ),
        ResNetSpec(
            name="seed_tf_cifar", block="basic", layers=(2, 3, 2), widths=(32, 64, 128), strides=(1, 2, 2),
            stem="cifar", stem_width=32, shortcut="avgpool_pad", batch_norm=False, relu_after_add=False,
            padding="tf_same", num_classes=10, image_size=32, source="seed tutorial 001 (TF1 res_net)",
        ),
        _imagenet("keras_resnet50", layers=(3, 4, 6, 3), **_KERAS_V1),
        _imagenet("keras_resnet101", layers=(3, 4, 23, 3), **_KERAS_V1),
        _imagenet("keras_resnet152", layers=(3, 8, 36, 3), **_KERAS_V1),
        _imagenet("keras_resnet50v2", layers=(3, 4, 6, 3), **_KERAS_V2),
        _imagenet("keras_resnet101v2", layers=(3, 4, 23, 3), **_KERAS_V2),
        _imagenet("keras_resnet152v2", layers=(3, 8, 36, 3), **_KERAS_V2),
    ]
}


def list_specs() -> list[str]:
    """Names of every preset, in table order."""
    return list(PRESETS)


def get_spec(name: str | ResNetSpec, **overrides) -> ResNetSpec:
    """A preset by name (or a spec as is), with fields such as ``num_classes`` replaced."""
    if isinstance(name, ResNetSpec):
        spec = name
    else:
        try:
            spec = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown architecture {name!r}; known: {', '.join(PRESETS)}") from None
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ResNetSpec)}
    if unknown:
        raise ValueError(f"unknown spec fields: {', '.join(sorted(unknown))}")
    return spec.replace(**overrides) if overrides else spec
