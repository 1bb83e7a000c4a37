"""Framework-free description of every ResNet variant; the only source of numbers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import SpecError

BlockKind = Literal["basic", "bottleneck"]
StemKind = Literal["imagenet", "cifar", "deep"]
ShortcutKind = Literal["projection", "avgpool_projection", "pad", "avgpool_pad"]
ShortcutAt = Literal["channel_change", "stage_start"]
StrideOn = Literal["3x3", "1x1"]
StrideBlock = Literal["first", "last"]
ConvBias = Literal["unnormalized", "all", "stem", "none"]
Padding = Literal["symmetric", "tf_same"]
# what build_model's dtype takes; bfloat16 and float16 run as mixed precision over float32 parameters
DTYPES = ("float32", "float64", "bfloat16", "float16")
MIXED_PRECISION = ("bfloat16", "float16")
# the fields whose values form a closed set
_CHOICES = {"block": BlockKind, "stem": StemKind, "shortcut": ShortcutKind, "shortcut_at": ShortcutAt,
            "stride_on": StrideOn, "stride_block": StrideBlock, "conv_bias": ConvBias, "padding": Padding,
            "stem_padding": Padding}
# the shortcuts with weights
PROJECTIONS = ("projection", "avgpool_projection")


@dataclass(frozen=True)
class ResNetSpec:
    """One ResNet: every number and every structural choice the three models read.

    Fields (each structural one takes a value from a closed set, checked on construction):

    - ``name``: the preset's name, or any label for a custom spec.
    - ``block``: "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1; 4x wider output).
    - ``layers``: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    - ``widths``: each stage's *bottleneck* width, the channels of its 3x3 convs (64, 128, 256, 512 for
      ResNet-50, whose stage outputs are 4x that). References disagree here: Hugging Face's
      ``hidden_sizes`` are the stage outputs.
    - ``strides``: each stage's stride (its first block's, or its last's, see ``stride_block``).
    - ``stem``: "imagenet" = conv 7x7/2 + BN + ReLU + max-pool 3x3/2; "cifar" = conv 3x3/1 + BN + ReLU;
      "deep" = ResNet-C/D of He et al. 2019 (Bag of Tricks) as timm builds it: a 3x3/2 conv, then
      (BN, ReLU, 3x3/1 conv) for each further width, then BN + ReLU + max-pool 3x3/2.
    - ``stem_width``: the (last) stem conv's output channels.
    - ``stem_widths``: the deep stem's conv widths before the last, (32, 32) for timm's ResNet-D;
      empty for the other stems.
    - ``shortcut``: used where ``shortcut_at`` puts one. "projection" = 1x1 conv with the block's
      stride (+ BN when ``shortcut_bn``); "avgpool_projection" = ResNet-D's 2x2 average pool with the
      stride (ceil mode, padding not counted), then a 1x1/1 conv (+ BN), so no input is skipped;
      "pad" = option A of He et al. 2016 §4.2 (subsample, zero-pad channels); "avgpool_pad" = the TF
      seed's 2x2 average pool, then zero-pad channels. Elsewhere, where only the resolution
      changes, the shortcut subsamples (Keras ResNetV2's 1x1 max-pool).
    - ``shortcut_at``: "channel_change" puts that shortcut where the channel count changes;
      "stage_start" in the first block of every stage as well (keras-hub's basic ResNet-vd).
    - ``shortcut_bn``: whether a projection shortcut has a BN after its conv.
    - ``stride_on``: which bottleneck conv strides: "3x3" (v1.5, torchvision) or "1x1" (v1, Keras).
    - ``stride_block``: which block of a stage strides: "first" (torchvision) or "last" (Keras V2).
    - ``conv_bias``: which convs carry a bias. "unnormalized": those not followed by BN (a bias
      right before BN is redundant; torchvision); "all": every conv (keras.applications, d2l);
      "stem": the stem conv(s) too (seed 001's PyTorch network); "none": no conv at all, even
      where no BN follows (keras-hub's pre-activation v2).
    - ``batch_norm``: False drops every BN (the TF seed network).
    - ``preact``: pre-activation blocks (He et al. 2016b): BN-ReLU before each conv, a ``post_bn``
      after the last stage, no BN in the stem.
    - ``relu_after_add``: True: ReLU after the addition (He et al.); False: ReLU at the end of the
      residual branch, then the addition (the TF seed network).
    - ``padding``: how the block convs and the stem max-pool pad. "symmetric" pads k//2 on each
      side like PyTorch; "tf_same" is TensorFlow's 'same', which pads bottom/right more at stride 2
      (the TF seed network; the Flax ImageNet example, whose nn.Conv and max-pool default to it).
    - ``stem_padding``: the same choice for the stem convs (the Flax example pads its 7x7 stem
      conv by 3 on each side, explicitly).
    - ``pool_zero_pad``: Keras applications pads the stem max-pool with zeros, not -inf; after a
      ReLU that is the same, in V2 (no ReLU before the pool) it is not.
    - ``bn_eps``: BN's epsilon (PyTorch's 1e-5 default; Keras applications uses 1.001e-5).
    - ``bn_momentum`` follows PyTorch: the weight of the *new* batch (Keras/Flax use 1 - it).
    - ``in_channels``, ``num_classes``: the input's channels and the classifier's outputs.
    - ``image_size``: the input side the preset was made for (a default for tests and commands;
      every preset takes other sizes).
    - ``source``: where the preset comes from, for people.
    """

    name: str
    block: BlockKind
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    stem: StemKind = "imagenet"
    stem_width: int = 64
    stem_widths: tuple[int, ...] = ()
    shortcut: ShortcutKind = "projection"
    shortcut_at: ShortcutAt = "channel_change"
    shortcut_bn: bool = True
    stride_on: StrideOn = "3x3"
    stride_block: StrideBlock = "first"
    conv_bias: ConvBias = "unnormalized"
    batch_norm: bool = True
    preact: bool = False
    relu_after_add: bool = True
    padding: Padding = "symmetric"
    stem_padding: Padding = "symmetric"
    pool_zero_pad: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    in_channels: int = 3
    num_classes: int = 1000
    image_size: int = 224
    source: str = ""

    def __post_init__(self) -> None:
        for field, kind in _CHOICES.items():
            if getattr(self, field) not in get_args(kind):
                choices = ", ".join(map(repr, get_args(kind)))
                raise SpecError(f"{self.name}: {field}={getattr(self, field)!r} is not one of {choices}")
        for field in dataclasses.fields(self):
            if field.type == "bool" and not isinstance(getattr(self, field.name), bool):
                raise SpecError(f"{self.name}: {field.name} must be True or False, got {getattr(self, field.name)!r}")
        if not (len(self.layers) == len(self.widths) == len(self.strides)) or not self.layers:
            raise SpecError(f"{self.name}: layers, widths and strides must be non-empty and of one length")
        for field in ("layers", "widths", "strides", "stem_widths"):
            if not all(isinstance(v, int) and v >= 1 for v in getattr(self, field)):
                raise SpecError(f"{self.name}: {field} must hold integers >= 1, got {getattr(self, field)}")
        if self.pool_zero_pad and self.padding == "tf_same":
            raise SpecError(f"{self.name}: pool_zero_pad is Keras applications' symmetric pad; padding='tf_same' pads with -inf")
        if (self.stem == "deep") != bool(self.stem_widths):
            raise SpecError(f"{self.name}: stem_widths are for stem='deep' and it needs them, got {self.stem_widths}")
        for field in ("in_channels", "num_classes", "stem_width", "image_size"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise SpecError(f"{self.name}: {field} must be >= 1, got {getattr(self, field)!r}")
        if not 0 < self.bn_eps < 1 or not 0 < self.bn_momentum < 1:
            raise SpecError(f"{self.name}: bn_eps and bn_momentum must lie in (0, 1), got {self.bn_eps}, {self.bn_momentum}")

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def final_width(self) -> int:
        return self.widths[-1] * self.expansion

    @property
    def num_stages(self) -> int:
        return len(self.layers)

    def has_bias(self, followed_by_bn: bool, stem: bool = False) -> bool:
        """Whether a conv carries a bias (see ``conv_bias``)."""
        if self.conv_bias == "none":
            return False
        if self.conv_bias == "all" or (stem and self.conv_bias == "stem"):
            return True
        return not (self.batch_norm and followed_by_bn)

    def stem_convs(self) -> list[tuple[int, int, int, int]]:
        """The stem's convs in order: (in, out, kernel, stride) each."""
        if self.stem != "deep":
            return [(self.in_channels, self.stem_width, *((7, 2) if self.stem == "imagenet" else (3, 1)))]
        widths = (self.in_channels, *self.stem_widths, self.stem_width)
        return [(cin, cout, 3, 2 if i == 0 else 1) for i, (cin, cout) in enumerate(zip(widths, widths[1:]))]

    def blocks(self) -> list[BlockPlan]:
        """Every residual block in order, with its channels, stride and shortcut."""
        plans = []
        in_ch = self.stem_width
        for stage, (n, width, stride) in enumerate(zip(self.layers, self.widths, self.strides)):
            out_ch = width * self.expansion
            for index in range(n):
                strided = index == (0 if self.stride_block == "first" else n - 1)
                s = stride if strided else 1
                if in_ch != out_ch or (index == 0 and self.shortcut_at == "stage_start"):
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
                plans.append(BlockPlan(f"layer{stage + 1}.{index}", stage + 1, in_ch, out_ch, s, shortcut, convs))
                in_ch = out_ch
        return plans

    def replace(self, **overrides) -> ResNetSpec:
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class BlockPlan:
    """One block as the models build it; derived from a spec, never written by hand."""

    prefix: str  # the canonical module path, 'layer3.2'
    stage: int  # 1-based, as in 'layer3'
    in_channels: int
    out_channels: int
    stride: int
    shortcut: Literal["identity", "subsample", "projection", "avgpool_projection", "pad", "avgpool_pad"]
    convs: tuple[tuple[int, int, int, int], ...]  # the residual branch: (in, out, kernel, stride) each


_TORCHVISION = "torchvision (He et al. 2016, v1.5)"
_KERAS_V1 = dict(block="bottleneck", stride_on="1x1", conv_bias="all", bn_eps=1.001e-5, source="keras.applications (v1)")
_KERAS_V2 = dict(
    block="bottleneck", stride_block="last", strides=(2, 2, 2, 1), preact=True, shortcut_bn=False,
    pool_zero_pad=True, bn_eps=1.001e-5, source="keras.applications (v2, He et al. 2016b)",
)
# timm's resnet18d..resnet152d: stem_width=32, stem_type='deep', avg_down=True
_RESNET_D = dict(stem="deep", stem_widths=(32, 32), shortcut="avgpool_projection",
                 source="timm ResNet-D (He et al. 2019, Bag of Tricks)")
# keras-hub's basic_block_vd also projects in the first block of stage 1 (64 -> 64, stride 1); its
# bottleneck_block_vd presets are timm's resnet50d..resnet152d
_KERAS_HUB_VD = dict(_RESNET_D, shortcut_at="stage_start", source="keras-hub ResNet-vd (basic blocks)")
# keras-hub's use_pre_activation=True: unlike keras.applications V2, no conv has a bias, the first block of a
# stage strides (on the 3x3), and the max-pool pads with -inf
_KERAS_HUB_V2 = dict(preact=True, shortcut_bn=False, conv_bias="none", source="keras-hub ResNet v2 (He et al. 2016b)")
# seed 001's PyTorch networks: the stride on the first 1x1 (v1), a bias on the stem conv alone
_SEED_TORCH = dict(block="bottleneck", stride_on="1x1", conv_bias="stem")
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_IMAGENET_STRIDES = (1, 2, 2, 2)
_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


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
        *(_imagenet(f"resnet{depth}", *_DEPTHS[depth]) for depth in _DEPTHS),
        *(_imagenet(f"resnet{depth}d", *_DEPTHS[depth], **_RESNET_D) for depth in _DEPTHS),
        *(_cifar(f"resnet{6 * n + 2}", n) for n in (3, 5, 7, 9, 18, 200)),
        _imagenet(
            "d2l_resnet18", "basic", (2, 2, 2, 2), conv_bias="all", shortcut_bn=False,
            in_channels=1, num_classes=10, source="seed tutorials 000/002/003/004 (d2l)",
        ),
        ResNetSpec(
            name="seed_tf_cifar", block="basic", layers=(2, 3, 2), widths=(32, 64, 128), strides=(1, 2, 2),
            stem="cifar", stem_width=32, shortcut="avgpool_pad", batch_norm=False, relu_after_add=False,
            padding="tf_same", stem_padding="tf_same", num_classes=10, image_size=32,
            source="seed tutorial 001 (TF1 res_net)",
        ),
        _imagenet("seed_torch_resnet50", layers=(3, 4, 6, 3), **_SEED_TORCH, source="seed tutorial 001 (PyTorch Resnet50)"),
        ResNetSpec(
            name="seed_torch_cifar", layers=(3, 4), widths=(64, 128), strides=(1, 2), num_classes=10, image_size=32,
            **_SEED_TORCH, source="seed tutorial 001 (PyTorch CIFAR-10 ResNet, ImageNet stem)",
        ),
        _imagenet("keras_resnet50", layers=(3, 4, 6, 3), **_KERAS_V1),
        _imagenet("keras_resnet101", layers=(3, 4, 23, 3), **_KERAS_V1),
        _imagenet("keras_resnet152", layers=(3, 8, 36, 3), **_KERAS_V1),
        _imagenet("keras_resnet50v2", layers=(3, 4, 6, 3), **_KERAS_V2),
        _imagenet("keras_resnet101v2", layers=(3, 4, 23, 3), **_KERAS_V2),
        _imagenet("keras_resnet152v2", layers=(3, 8, 36, 3), **_KERAS_V2),
        *(_imagenet(f"keras_hub_resnet{depth}vd", *_DEPTHS[depth], **_KERAS_HUB_VD) for depth in (18, 34)),
        *(_imagenet(f"keras_hub_resnet{depth}v2", *_DEPTHS[depth], **_KERAS_HUB_V2) for depth in (50, 101)),
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
            raise SpecError(f"unknown architecture {name!r}; known: {', '.join(PRESETS)}") from None
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ResNetSpec)}
    if unknown:
        raise SpecError(f"unknown spec fields: {', '.join(sorted(unknown))}")
    return spec.replace(**overrides) if overrides else spec


def differing(spec: ResNetSpec, other: ResNetSpec, *, ignore: tuple[str, ...] = ("name",)) -> dict[str, object]:
    """``spec``'s value of every field (``ignore`` aside) where it differs from ``other``: the one comparison behind
    every description of a spec against a preset."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
            if f.name not in ignore and getattr(spec, f.name) != getattr(other, f.name)}


def with_overrides(preset: str, overrides: dict[str, object]) -> str:
    """'resnet20', or 'resnet20 with num_classes=100, layers=(4, 4, 4)'."""
    extra = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return f"{preset} with {extra}" if extra else preset


def describe(spec: ResNetSpec) -> str:
    """``spec`` as its preset and the fields that differ from it, or '<name> (not a preset)'."""
    base = PRESETS.get(spec.name)
    return f"{spec.name} (not a preset)" if base is None else with_overrides(spec.name, differing(spec, base))
