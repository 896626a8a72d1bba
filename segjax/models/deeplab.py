"""DeepLabv3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation") and DeepLabv3+
(Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution") on a dilated ResNet-50 or ResNet-101.

Atrous spatial pyramid pooling (ASPP) on the encoder's last layer: a 1x1 branch, three 3x3 branches dilated by
`ASPP_RATES` (6/12/18 at output stride 16, doubled at 8) and image pooling (global average, 1x1, broadcast back),
each conv-BN-ReLU; concatenated, projected by a 1x1 conv-BN-ReLU, dropout. Then
  v3:  a 3x3 conv-BN-ReLU and the 1x1 classifier at the output stride, upsampled to the input by the output stride
       (torchvision's `DeepLabHead`; parameter counts equal torchvision's deeplabv3_resnet50 without its auxiliary
       head);
  v3+: the ASPP output upsampled to stride 4 and concatenated with a 1x1 conv-BN-ReLU projection (48 channels) of
       ResNet's layer1, two 3x3 conv-BN-ReLU, the classifier, upsampled x4 to the input.
Widths scale with the encoder's (`base_width` 64: 256 channels in ASPP and the decoder, 48 in the projection), so
small presets stay small. The upsampling steps are `UpStep`s of the configured operator (the papers' bilinear by
default), so DeepLab joins the upsampling ablations like the other networks. Every layer after the encoder is under
'head' (`optimizer.lr_multipliers={'^head/': 10.0}` gives it the papers' 10x rate). Deviations: plain 3x3
convolutions where v3+ uses depthwise-separable ones on Xception (as mmsegmentation's and torchvision-style ResNet
variants); inputs are padded to a multiple of the output stride.
"""

from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from segjax import ops
from segjax.models.base import EncoderDecoder
from segjax.models.encoder import RESNET_BLOCKS, ResNetEncoder, TorchConv
from segjax.models.layers import Conv, NormFactory, UpStep

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}  # by output stride (the v3 paper, Sec. 3.3)
DEEPLAB_ENCODERS = tuple(RESNET_BLOCKS)


def head_width(base_width: int) -> int:
    """Channels of ASPP and the v3 / v3+ convolutions after it: 256 at ResNet-50's width 64."""
    return 4 * base_width


def low_level_width(base_width: int) -> int:
    """Channels of v3+'s projection of the stride-4 features: 48 at width 64 (fewer than the ASPP's 256, so the
    decoder leans on the semantic features; the v3+ paper's Table 1)."""
    return max(1, 3 * base_width // 4)


class ConvNormReLU(nn.Module):
    """Conv (PyTorch padding, so a `dilation`-d 3x3 keeps the size) without bias -> norm -> ReLU: 'conv', 'norm'."""

    features: int
    kernel_size: int
    norm: NormFactory
    dilation: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        padding = self.dilation * (self.kernel_size // 2)
        x = TorchConv(self.features, self.kernel_size, 1, padding, self.dilation, self.dtype, name="conv")(x)
        return nn.relu(self.norm(name="norm")(x, train))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (see the module docstring): branches 'branch0' (1x1), 'branch1'..'branch3'
    (3x3 dilated by `rates`), 'pooling'; 'project' (1x1) and dropout."""

    features: int
    rates: tuple[int, ...]
    norm: NormFactory
    dropout: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        branches = [ConvNormReLU(self.features, 1, self.norm, dtype=self.dtype, name="branch0")(x, train)]
        for i, rate in enumerate(self.rates):
            branch = ConvNormReLU(self.features, 3, self.norm, rate, self.dtype, name=f"branch{i + 1}")
            branches.append(branch(x, train))
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = ConvNormReLU(self.features, 1, self.norm, dtype=self.dtype, name="pooling")(pooled, train)
        branches.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.features)))  # bilinear from 1x1 is a copy
        y = ConvNormReLU(self.features, 1, self.norm, dtype=self.dtype, name="project")(
            jnp.concatenate(branches, axis=-1), train
        )
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class DeepLabHead(nn.Module):
    """Everything after the encoder (named 'head'): ASPP on `features` (at `output_stride`), then v3's 3x3 conv
    ('conv') or, with `low_level` features at stride 4 (v3+), the decoder ('up_aspp', 'low_level', 'conv0',
    'conv1'); the classifier ('classifier', 1x1 with bias) and the upsampling to the input ('up')."""

    num_classes: int
    width: int
    low_level_width: int
    rates: tuple[int, ...]
    norm: NormFactory
    dropout: float
    upsample: ops.UpsampleSpec
    output_stride: int
    dtype: Any = None

    @nn.compact
    def __call__(self, features, low_level, train: bool):
        x = ASPP(self.width, self.rates, self.norm, self.dropout, self.dtype, name="aspp")(features, train)
        stride = self.output_stride
        if low_level is None:
            x = ConvNormReLU(self.width, 3, self.norm, dtype=self.dtype, name="conv")(x, train)
        else:
            factor = stride // 4
            x = UpStep(self.upsample, self.width, factor, False, self.dtype, name="up_aspp")(x)
            projected = ConvNormReLU(self.low_level_width, 1, self.norm, dtype=self.dtype, name="low_level")
            x = jnp.concatenate([x, projected(low_level, train)], axis=-1)
            for i in range(2):
                x = ConvNormReLU(self.width, 3, self.norm, dtype=self.dtype, name=f"conv{i}")(x, train)
            stride = 4
        x = Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)
        return UpStep(self.upsample, self.num_classes, stride, False, self.dtype, name="up")(x)


class DeepLab(EncoderDecoder):
    """DeepLabv3 (`decoder=False`) or v3+ (`decoder=True`) on ResNet-50/101 (`encoder`) of width `base_width`,
    dilated to `output_stride` 16 or 8."""

    decoder: bool = False
    encoder: str = "resnet50"
    output_stride: int = 16
    dropout: float = 0.1
    upsample: ops.UpsampleSpec = ops.UpsampleSpec("bilinear")

    unsupported_methods: ClassVar[dict] = {
        "max_unpool": (
            "DeepLab's ResNet encoder keeps no pooling indices (use segnet, unet or deconvnet for max_unpool)"
        ),
    }

    @property
    def stride(self) -> int:
        return self.output_stride

    def check(self):
        name = type(self).__name__
        if self.encoder not in DEEPLAB_ENCODERS or self.output_stride not in ASPP_RATES:
            raise ValueError(
                f"model {name}: encoder={self.encoder!r}, output_stride={self.output_stride} cannot work: DeepLab "
                f"needs encoder one of {', '.join(DEEPLAB_ENCODERS)} and output_stride 16 or 8 (its atrous rates)."
            )
        # The shared checks (operator, norm, classes) are those of a ResNet-50 network; the depth is the layout's.
        EncoderDecoder.check(self.clone(encoder="resnet50", parent=None))

    @nn.compact
    def network(self, x, train: bool):
        blocks = RESNET_BLOCKS[self.encoder]
        encoder = ResNetEncoder(self.base_width, self.norm, self.output_stride, self.dtype, blocks, name="encoder")
        levels = encoder(x, train)
        low_level = levels[1].features if self.decoder else None  # layer1, stride 4
        head = DeepLabHead(
            self.num_classes,
            head_width(self.base_width),
            low_level_width(self.base_width),
            ASPP_RATES[self.output_stride],
            self.norm,
            self.dropout,
            self.upsample,
            self.output_stride,
            self.dtype,
            name="head",
        )
        return head(levels[-1].features, low_level, train)


class DeepLabV3(DeepLab):
    """DeepLabv3: ASPP, a 3x3 conv, the classifier, upsampled by the output stride."""

    decoder: bool = False


class DeepLabV3Plus(DeepLab):
    """DeepLabv3+: ASPP upsampled to stride 4 and fused with layer1's projection, two 3x3 convs, x4 upsampling."""

    decoder: bool = True
