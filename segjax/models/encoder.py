"""The encoders: the VGG-style one shared by FCN, SegNet, U-Net and DeconvNet, torchvision's ResNet-50 (for U-Net,
FCN and DeepLab) and ResNet-101 (DeepLab), and what every encoder returns.

Parameter names (under the model's 'encoder'): 'block{i}/conv{j}/kernel' (HWIO) and, without norm,
'block{i}/conv{j}/bias'; with batch norm 'block{i}/norm{j}/scale', '.../bias' (params) and '.../mean', '.../var'
(batch_stats); with group norm 'block{i}/norm{j}/gn/scale', '.../bias'. Levels and convolutions count from 1 and 0:
VGG16's conv3_2 is 'block3/conv1'. ResNet-50's follow torchvision's with '_' for '.': 'conv1', 'bn1',
'layer{i}_{j}/conv{k}', 'layer{i}_{j}/bn{k}', 'layer{i}_{j}/downsample_conv' and 'downsample_norm' for torchvision's
'layer{i}.{j}.downsample.0' and '.1'.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from segjax.models.layers import ConvBlock, NormFactory, max_pool


class EncoderLevel(NamedTuple):
    """One level of an encoder: `features` before pooling (U-Net's skip; its spatial size is what max-unpooling
    restores), `stride` (of `features` with respect to the input), and the pooled map with its argmax indices (None
    where the level does not pool, or does not keep indices)."""

    features: jax.Array
    stride: int
    pooled: jax.Array | None = None
    indices: jax.Array | None = None

    @property
    def output(self) -> jax.Array:
        """What the level hands on: the pooled map where it pools (VGG's pool3, pool4), else its features."""
        return self.features if self.pooled is None else self.pooled

    @property
    def output_stride(self) -> int:
        return self.stride if self.pooled is None else 2 * self.stride


class VGGEncoder(nn.Module):
    """Level i: `convs[i]` conv-norm-ReLU layers (kernel_size: 3, SegNet-Basic's 7) of `widths[i]` channels, then 2x2
    max pooling (keeping its argmax indices when `pool_indices`), except after the last level when `pool_last` is False
    (U-Net's bottom). Dropout at rate `dropout` follows the pooling of the levels listed in `dropout_levels` (Bayesian
    SegNet). Returns one `EncoderLevel` per level."""

    widths: tuple[int, ...]
    convs: tuple[int, ...]
    norm: NormFactory
    pool_indices: bool = False
    pool_last: bool = True
    dropout: float = 0.0
    dropout_levels: tuple[int, ...] = ()
    kernel_size: int = 3
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool) -> tuple[EncoderLevel, ...]:
        levels = []
        for i, (width, n) in enumerate(zip(self.widths, self.convs, strict=True)):
            block = ConvBlock((width,) * n, self.norm, self.kernel_size, dtype=self.dtype, name=f"block{i + 1}")
            x = block(x, train)
            level = EncoderLevel(x, 2**i)
            if self.pool_last or i < len(self.widths) - 1:
                x, indices = max_pool(x, with_indices=self.pool_indices)
                if i in self.dropout_levels:
                    x = nn.Dropout(self.dropout, deterministic=not train)(x)
                level = level._replace(pooled=x, indices=indices)
            levels.append(level)
        return tuple(levels)


# --------------------------------------------------------------------------------------------------
# ResNet-50, ResNet-101
# --------------------------------------------------------------------------------------------------

RESNET50_BLOCKS = (3, 4, 6, 3)  # bottleneck blocks of layer1..layer4
# torchvision's ResNet-50 and ResNet-101 differ only in layer3's depth. ResNet-101 is DeepLab's (the papers report
# both); the other networks take the ENCODERS.
RESNET_BLOCKS = {"resnet50": RESNET50_BLOCKS, "resnet101": (3, 4, 23, 3)}
BOTTLENECK_EXPANSION = 4
OUTPUT_STRIDES = (8, 16, 32)
ENCODERS = ("vgg", "resnet50")


class TorchConv(nn.Module):
    """A convolution without bias padded as PyTorch pads (`padding` zeros on every side, then `stride` and
    `dilation`), so that a torchvision network's numbers carry over at every input size ('kernel', HWIO)."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.he_normal(), (k, k, x.shape[-1], self.features), jnp.float32)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        p = self.padding
        return lax.conv_general_dilated(
            x,
            kernel,
            (self.stride, self.stride),
            ((p, p), (p, p)),
            rhs_dilation=(self.dilation, self.dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels), batch norm after
    each, the shortcut projected ('downsample_conv', 'downsample_norm') where the shape changes."""

    planes: int
    norm: NormFactory
    stride: int = 1
    dilation: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        out_channels = self.planes * BOTTLENECK_EXPANSION
        y = x
        for i, (features, kernel, stride, dilation) in enumerate(
            ((self.planes, 1, 1, 1), (self.planes, 3, self.stride, self.dilation), (out_channels, 1, 1, 1))
        ):
            y = TorchConv(
                features, kernel, stride, dilation * (kernel // 2), dilation, self.dtype, name=f"conv{i + 1}"
            )(y)
            y = self.norm(name=f"bn{i + 1}")(y, train)
            if i < 2:
                y = nn.relu(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_channels:
            shortcut = TorchConv(out_channels, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x)
            shortcut = self.norm(name="downsample_norm")(shortcut, train)
        return nn.relu(y + shortcut)


class ResNetEncoder(nn.Module):
    """torchvision's ResNet-50 (`blocks` RESNET_BLOCKS['resnet101']: ResNet-101) without its classifier: stem ('conv1',
    'bn1', ReLU: stride 2; 3x3 max pooling), then layer1..layer4 ('layer{i}_{j}' bottlenecks: strides 4, 8, 16, 32).
    `width` is the stem's channels (64 in ResNet-50; a smaller width gives the same layout, narrower). `output_stride`
    16 or 8 dilates layer4, or layer3 and layer4, instead of striding (torchvision's replace_stride_with_dilation).
    Returns five `EncoderLevel`s: the stem's features (stride 2) and each layer's output. Needs batch or group norm
    (`EncoderDecoder.check`)."""

    width: int = 64
    norm: NormFactory = NormFactory()
    output_stride: int = 32
    dtype: Any = None
    blocks: tuple[int, ...] = RESNET50_BLOCKS  # bottlenecks of layer1..layer4

    @nn.compact
    def __call__(self, x, train: bool) -> tuple[EncoderLevel, ...]:
        x = TorchConv(self.width, 7, 2, 3, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(self.norm(name="bn1")(x, train))
        levels = [EncoderLevel(x, 2)]
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
        stride, dilation = 4, 1
        for i, blocks in enumerate(self.blocks):
            layer_stride = 1 if i == 0 else 2
            previous_dilation = dilation
            if layer_stride == 2 and stride >= self.output_stride:
                dilation, layer_stride = dilation * 2, 1
            for j in range(blocks):
                x = Bottleneck(
                    self.width * 2**i,
                    self.norm,
                    layer_stride if j == 0 else 1,
                    previous_dilation if j == 0 else dilation,
                    self.dtype,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
            stride *= layer_stride
            levels.append(EncoderLevel(x, stride))
        return tuple(levels)


ResNet50Encoder = ResNetEncoder  # the name U-Net, FCN and the weight loader know it by (blocks default to ResNet-50's)
