"""Framework-free description of every ResNet variant; the only source of numbers."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from .errors import SpecError

BlockKind = Literal["basic", "bottleneck"]
StemKind = Literal["imagenet", "cifar", "deep"]
ShortcutKind = Literal["projection", "avgpool_projection", "pad", "avgpool_pad"]
ShortcutAt = Literal["channel_change", "stage_start"]
StrideOn = Literal["3x3", "1x1"]
StrideBlock = Literal["first", "last"]
ConvBias = Literal["unnormalized", "all", "stem", "none"]
Padding = Literal["symmetric", "tf_same"]
AttentionKind = Literal["none", "se", "eca"]
# what build_model's dtype takes; bfloat16 and float16 run as mixed precision over float32 parameters
DTYPES = ("float32", "float64", "bfloat16", "float16")
MIXED_PRECISION = ("bfloat16", "float16")
# the fields whose values form a closed set
_CHOICES = {"block": BlockKind, "stem": StemKind, "shortcut": ShortcutKind, "shortcut_at": ShortcutAt,
            "stride_on": StrideOn, "stride_block": StrideBlock, "conv_bias": ConvBias, "padding": Padding,
            "stem_padding": Padding, "attention": AttentionKind}
# the shortcuts with weights
PROJECTIONS = ("projection", "avgpool_projection")
# a stage's output channels per unit of its width (torchvision's Block.expansion)
EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class ResNetSpec:
    """One ResNet: every number and every structural choice the three models read.

    Fields (each structural one takes a value from a closed set, checked on construction):

    - ``name``: the preset's name, or any label for a custom spec.
    - ``block``: "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1; 4x wider output).
    - ``layers``: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    - ``widths``: each stage's width, torchvision's ``planes`` (64, 128, 256, 512 for ResNet-50): a basic
      stage outputs that many channels, a bottleneck stage 4x that (``stage_widths``), and its 3x3 convs
      have ``int(width * width_per_group / 64) * groups`` (the width itself for ResNet-50). References
      disagree here: Hugging Face's ``hidden_sizes`` are the stage outputs.
    - ``groups``, ``width_per_group``: torchvision's names (timm's ``cardinality``, ``base_width``) for the
      bottleneck's 3x3 conv: split into ``groups`` groups (ResNeXt, Xie et al. 2017: 32 for 32x4d), each
      ``width_per_group`` channels wide per 64 of ``widths`` (4 for 32x4d; 128 for Wide ResNet-50-2,
      Zagoruyko & Komodakis 2016). Basic blocks take only 1 and 64, as in torchvision.
    - ``attention``: timm's ``attn_layer``, a channel gate on the residual branch after its last BN, before
      the addition, as module ``se`` of the block: "se" = Squeeze-and-Excitation (Hu et al. 2018: global
      mean, 1x1 conv ``fc1`` down to ``make_divisible(C * se_rd_ratio, se_rd_divisor)`` channels, ReLU,
      1x1 conv ``fc2`` back, sigmoid; timm's SEModule), "eca" = Efficient Channel Attention (Wang et al.
      2020: global mean, a 1-D conv over the channels with kernel ``int(|log2(C) + eca_beta| / eca_gamma)``
      rounded up to odd, at least 3, sigmoid; timm's EcaModule), "none" = no gate.
    - ``se_rd_ratio``, ``se_rd_divisor``: SEModule's ``rd_ratio`` and ``rd_divisor`` (1/16 and 8).
    - ``eca_gamma``, ``eca_beta``: EcaModule's ``gamma`` and ``beta`` (2 and 1).
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
    - ``in_channels``, ``num_classes``: the input's channels and the classifier's outputs; ``num_classes=0`` is a
      headless backbone (detection and segmentation backbones, self-supervised encoders), as timm's
      ``num_classes=0``: no classifier, the network's output is the pooled features.
    - ``image_size``: the input side the preset was made for (a default for tests and commands;
      every preset takes other sizes).
    - ``source``: where the preset comes from, for people.
    """

    name: str
    block: BlockKind
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    groups: int = 1
    width_per_group: int = 64
    attention: AttentionKind = "none"
    se_rd_ratio: float = 1 / 16
    se_rd_divisor: int = 8
    eca_gamma: float = 2.0
    eca_beta: float = 1.0
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
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise SpecError(f"{self.name}: num_classes must be >= 0 (0: a headless backbone), got {self.num_classes!r}")
        for field in ("in_channels", "stem_width", "image_size", "groups", "width_per_group", "se_rd_divisor"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise SpecError(f"{self.name}: {field} must be >= 1, got {getattr(self, field)!r}")
        if not 0 < self.bn_eps < 1 or not 0 < self.bn_momentum < 1:
            raise SpecError(f"{self.name}: bn_eps and bn_momentum must lie in (0, 1), got {self.bn_eps}, {self.bn_momentum}")
        if self.block == "basic" and (self.groups, self.width_per_group) != (1, 64):
            raise SpecError(f"{self.name}: groups={self.groups}, width_per_group={self.width_per_group}: basic blocks "
                            "take only groups=1 and width_per_group=64, as in torchvision")
        if self.block == "bottleneck" and min(bottleneck_width(w, self.groups, self.width_per_group) for w in self.widths) < 1:
            raise SpecError(f"{self.name}: width_per_group={self.width_per_group} leaves a stage of widths {self.widths} "
                            "without channels")
        if not 0 < self.se_rd_ratio <= 1 or not self.eca_gamma > 0 or not self.eca_beta >= 0:
            raise SpecError(f"{self.name}: se_rd_ratio must lie in (0, 1], eca_gamma be > 0 and eca_beta >= 0, got "
                            f"{self.se_rd_ratio}, {self.eca_gamma}, {self.eca_beta}")
        unused = [f.name for f in dataclasses.fields(self) if f.name.startswith(("se_", "eca_"))
                  and not f.name.startswith(f"{self.attention}_") and getattr(self, f.name) != f.default]
        if unused:
            raise SpecError(f"{self.name}: {', '.join(unused)} set, but attention={self.attention!r}")
        if self.attention != "none" and (self.preact or not self.relu_after_add):
            raise SpecError(f"{self.name}: attention={self.attention!r} is timm's, on blocks that add, then apply ReLU; "
                            "not on pre-activation blocks or with relu_after_add=False")

    @property
    def num_stages(self) -> int:
        return len(self.layers)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Each stage's output channels."""
        return tuple(width * EXPANSION[self.block] for width in self.widths)

    @property
    def final_width(self) -> int:
        return self.stage_widths[-1]

    @property
    def headless(self) -> bool:
        """No classifier (``num_classes=0``): a feature extractor whose output is the pooled features."""
        return self.num_classes == 0

    def plan(self) -> NetworkPlan:
        """The network as the models build it: every conv, BN, gate and the classifier, with canonical paths."""
        return _plan(self)

    def stem_convs(self) -> tuple[Conv, ...]:
        return self.plan().stem.convs

    def blocks(self) -> tuple[BlockPlan, ...]:
        """Every residual block in order, with its convs, BNs, gate and shortcut."""
        return self.plan().blocks

    def replace(self, **overrides) -> ResNetSpec:
        return dataclasses.replace(self, **overrides)


# ----------------------------------------------------------------------------- the one derivation of the geometry


class Conv(NamedTuple):
    """One convolution: its canonical module path, channels, square kernel, stride, bias, padding and groups."""

    path: str  # 'layer3.2.conv2'
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    bias: bool
    padding: Padding
    groups: int = 1
    dims: int = 2  # spatial dimensions: 1 for ECA's conv, which slides along the channels


class Norm(NamedTuple):
    """One BatchNorm: its canonical path, channels, and the stride from the image to its input (``reduction``):
    in training it averages batch x ceil(H / reduction) x ceil(W / reduction) values per channel."""

    path: str
    channels: int
    reduction: int


class Attention(NamedTuple):
    """A block's channel gate (``attention``): SE's convs ``fc1``, ``fc2`` or ECA's ``conv``, under ``path``."""

    path: str  # 'layer1.0.se', timm's name for either gate
    kind: AttentionKind
    channels: int
    convs: tuple[Conv, ...]


class Linear(NamedTuple):
    path: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class StemPlan:
    convs: tuple[Conv, ...]
    norms: tuple[Norm, ...]  # the deep stem's BN after each conv but the last (conv1.1, conv1.4)
    norm: Norm | None  # bn1, after the last conv; None in pre-activation networks
    maxpool: bool


@dataclass(frozen=True)
class BlockPlan:
    """One block as the models build it; derived from a spec, never written by hand."""

    prefix: str  # the canonical module path, 'layer3.2'
    stage: int  # 1-based, as in 'layer3'
    in_channels: int
    out_channels: int
    stride: int
    shortcut: Literal["identity", "subsample", "projection", "avgpool_projection", "pad", "avgpool_pad"]
    convs: tuple[Conv, ...]  # the residual branch
    norms: tuple[Norm, ...]  # bn1, bn2, ...: after each conv (before it, pre-activation)
    attention: Attention | None
    projection: Conv | None  # the shortcut's conv: downsample.0, or downsample.1 behind ResNet-D's average pool
    projection_norm: Norm | None  # the BN after it, where there is one


@dataclass(frozen=True)
class NetworkPlan:
    stem: StemPlan
    blocks: tuple[BlockPlan, ...]
    post_norm: Norm | None  # pre-activation's BN after the last stage
    fc: Linear | None  # None: a headless backbone (num_classes=0)
    batch_norm: bool  # False: no BN at any of the norms' places
    preact: bool  # each block's BN before its conv

    def modules(self) -> list[Conv | Norm | Linear]:
        """Every module with weights, in forward order (timm's and torchvision's state_dict order)."""
        bn = self.batch_norm
        out: list[Conv | Norm | Linear] = []
        for i, conv in enumerate(self.stem.convs):
            out += [self.stem.norms[i - 1]] if i and bn else []
            out.append(conv)
        out += [self.stem.norm] if self.stem.norm and bn else []
        for b in self.blocks:
            for conv, norm in zip(b.convs, b.norms):
                out += ([norm, conv] if self.preact else [conv, norm]) if bn else [conv]
            out += list(b.attention.convs) if b.attention else []
            out += [m for m in (b.projection, b.projection_norm) if m]
        out += [self.post_norm] if self.post_norm and bn else []
        return [*out, self.fc] if self.fc else out

    def norms(self) -> list[Norm]:
        """Every BatchNorm, in forward order."""
        return [m for m in self.modules() if isinstance(m, Norm)]


def bottleneck_width(width: int, groups: int, width_per_group: int) -> int:
    """The channels of a bottleneck's 3x3 conv (torchvision's ``int(planes * (base_width / 64.)) * groups``)."""
    return int(width * (width_per_group / 64.0)) * groups


def make_divisible(value: float, divisor: int) -> int:
    """SE's squeeze width: ``value`` rounded to the nearest multiple of ``divisor``, at least ``divisor``
    (timm's make_divisible with round_limit=0, as SEModule calls it)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def eca_kernel(channels: int, gamma: float, beta: float) -> int:
    """ECA's kernel for ``channels`` (Wang et al. 2020, eq. 12), odd and at least 3, with timm's arithmetic."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


def _bias(spec: ResNetSpec, followed_by_bn: bool, stem: bool = False) -> bool:
    """Whether a conv carries a bias (see ``conv_bias``)."""
    if spec.conv_bias == "none":
        return False
    if spec.conv_bias == "all" or (stem and spec.conv_bias == "stem"):
        return True
    return not (spec.batch_norm and followed_by_bn)


@functools.lru_cache(maxsize=64)
def _plan(spec: ResNetSpec) -> NetworkPlan:
    # the stem: one conv, or the deep stem's 3x3/2 then 3x3/1 convs, as timm's nn.Sequential (conv 3i, BN 3i + 1)
    kernel, stride = {"imagenet": (7, 2), "cifar": (3, 1), "deep": (3, 2)}[spec.stem]
    widths = (spec.in_channels, *spec.stem_widths, spec.stem_width)
    convs, norms, reduction = [], [], stride
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        path = f"conv1.{3 * i}" if spec.stem == "deep" else "conv1"
        # pre-activation leaves the last stem conv without BN after it
        convs.append(Conv(path, cin, cout, kernel, stride if i == 0 else 1, _bias(spec, not (last and spec.preact), stem=True),
                          spec.stem_padding))
        if not last:
            norms.append(Norm(f"conv1.{3 * i + 1}", cout, reduction))
    stem = StemPlan(tuple(convs), tuple(norms), None if spec.preact else Norm("bn1", spec.stem_width, reduction),
                    maxpool=spec.stem != "cifar")
    reduction *= 2 if stem.maxpool else 1

    blocks, in_ch = [], spec.stem_width
    for stage, (n, width, out_ch, stage_stride) in enumerate(
            zip(spec.layers, spec.widths, spec.stage_widths, spec.strides), start=1):
        for index in range(n):
            prefix = f"layer{stage}.{index}"
            s = stage_stride if index == (0 if spec.stride_block == "first" else n - 1) else 1
            if in_ch != out_ch or (index == 0 and spec.shortcut_at == "stage_start"):
                shortcut = spec.shortcut
            else:
                shortcut = "subsample" if s != 1 else "identity"
            if spec.block == "basic":
                branch = ((in_ch, width, 3, s, 1), (width, out_ch, 3, 1, 1))
            else:
                inner = bottleneck_width(width, spec.groups, spec.width_per_group)
                s1, s3 = (s, 1) if spec.stride_on == "1x1" else (1, s)
                branch = ((in_ch, inner, 1, s1, 1), (inner, inner, 3, s3, spec.groups), (inner, out_ch, 1, 1, 1))
            convs, norms, r = [], [], reduction
            for i, (cin, cout, k, cs, groups) in enumerate(branch, start=1):
                last = i == len(branch)
                if spec.preact:  # He et al. 2016b: BN + ReLU before each conv; the last feeds the addition directly
                    norms.append(Norm(f"{prefix}.bn{i}", cin, r))
                r *= cs
                convs.append(Conv(f"{prefix}.conv{i}", cin, cout, k, cs, _bias(spec, not (last and spec.preact)), spec.padding,
                                  groups))
                if not spec.preact:
                    norms.append(Norm(f"{prefix}.bn{i}", cout, r))
            blocks.append(BlockPlan(prefix, stage, in_ch, out_ch, s, shortcut, tuple(convs), tuple(norms),
                                    _attention(spec, f"{prefix}.se", out_ch), *_projection(spec, prefix, shortcut, in_ch,
                                                                                           out_ch, s, reduction)))
            in_ch, reduction = out_ch, reduction * s
    post_norm = Norm("post_bn", spec.final_width, reduction) if spec.preact else None
    fc = Linear("fc", spec.final_width, spec.num_classes) if spec.num_classes else None
    return NetworkPlan(stem, tuple(blocks), post_norm, fc, spec.batch_norm, spec.preact)


def _attention(spec: ResNetSpec, path: str, channels: int) -> Attention | None:
    """timm's gate for ``channels``; its convs carry a bias whatever ``conv_bias`` says (SEModule's bias=True)."""
    if spec.attention == "se":
        hidden = make_divisible(channels * spec.se_rd_ratio, spec.se_rd_divisor)
        convs = (Conv(f"{path}.fc1", channels, hidden, 1, 1, True, "symmetric"),
                 Conv(f"{path}.fc2", hidden, channels, 1, 1, True, "symmetric"))
    elif spec.attention == "eca":
        # one filter slides along the channels of the pooled (N, 1, C) signal, zero-padded (k - 1) / 2 at each end
        convs = (Conv(f"{path}.conv", 1, 1, eca_kernel(channels, spec.eca_gamma, spec.eca_beta), 1, False, "symmetric",
                      dims=1),)
    else:
        return None
    return Attention(path, spec.attention, channels, convs)


def _projection(spec: ResNetSpec, prefix: str, shortcut: str, cin: int, cout: int, stride: int, reduction: int
                ) -> tuple[Conv | None, Norm | None]:
    """A projection shortcut's conv and BN. ResNet-D (He et al. 2019 §4.2) average-pools first (``downsample.0``,
    no weights), so the 1x1 conv reads every input, at stride 1."""
    if shortcut not in PROJECTIONS:
        return None, None
    with_bn = spec.batch_norm and spec.shortcut_bn
    first = 1 if shortcut == "avgpool_projection" else 0
    conv = Conv(f"{prefix}.downsample.{first}", cin, cout, 1, 1 if first else stride, _bias(spec, with_bn), spec.padding)
    return conv, Norm(f"{prefix}.downsample.{first + 1}", cout, reduction * stride) if with_bn else None


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
# torchvision's resnext*/wide_resnet* (timm builds the same under the same names and keys)
_RESNEXT = "torchvision ResNeXt (Xie et al. 2017)"
_WIDE = dict(width_per_group=128, source="torchvision Wide ResNet (Zagoruyko & Komodakis 2016)")
# timm's gated ResNets, each the member of its kind with the most published weights among those the other
# fields here describe (timm 1.0.31: seresnet50 4, seresnext50_32x4d 2, ecaresnet50t 4 and ecaresnet50d 1 tags)
_SE = dict(attention="se", source="timm SE-ResNet (Hu et al. 2018)")
_ECA = dict(_RESNET_D, attention="eca", source="timm ECA-ResNet-D (Wang et al. 2020)")
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
        _imagenet("resnext50_32x4d", *_DEPTHS[50], groups=32, width_per_group=4, source=_RESNEXT),
        _imagenet("resnext101_32x8d", *_DEPTHS[101], groups=32, width_per_group=8, source=_RESNEXT),
        _imagenet("resnext101_64x4d", *_DEPTHS[101], groups=64, width_per_group=4, source=_RESNEXT),
        _imagenet("wide_resnet50_2", *_DEPTHS[50], **_WIDE),
        _imagenet("wide_resnet101_2", *_DEPTHS[101], **_WIDE),
        _imagenet("seresnet50", *_DEPTHS[50], **_SE),
        _imagenet("seresnext50_32x4d", *_DEPTHS[50], groups=32, width_per_group=4, **_SE),
        _imagenet("ecaresnet50d", *_DEPTHS[50], **_ECA),
        # timm's 'deep_tiered' stem: 24-32-64
        _imagenet("ecaresnet50t", *_DEPTHS[50], **{**_ECA, "stem_widths": (24, 32)}),
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
