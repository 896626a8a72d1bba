"""SegNet (Badrinarayanan, Kendall & Cipolla 2015) and DeconvNet (Noh, Hong & Han 2015).

Both: a VGG-style encoder whose 2x2 max poolings keep their argmax indices, and a mirrored decoder that
unpools with those indices (values go back exactly where the encoder's maxima were, zeros elsewhere) and
then convolves to densify the sparse map. Each decoder level has as many 3x3 conv-norm-ReLU layers as
its encoder level; the last one steps down to the next level's width. A 1x1 convolution gives the
class scores.

DeconvNet adds VGG's fully connected layers as convolutions between encoder and decoder (fc6, fc7 with
dropout, and the "deconv-fc6" back to the encoder width). Its decoder's stride-1 "deconvolution" layers are
3x3 convolutions here (a stride-1 transposed convolution is a convolution with a flipped kernel: the same
family of functions). Deviation from the paper: fc6 uses 'SAME' padding, so the network is fully
convolutional and works for any input size, instead of collapsing a 7x7 map to 1x1.

The decoder's operator is configurable; with a method other than max_unpool the indices are not
computed and each level upsamples the features instead (same channels, then the same convolutions).
"""

from flax import linen as nn

from segjax.models.base import EncoderDecoder
from segjax.models.layers import Conv, ConvBlock


class SegNet(EncoderDecoder):
    """SegNet; `dropout` > 0 gives Bayesian SegNet's dropout after the deepest three encoder and decoder
    levels. With `fc_width` set, the DeconvNet bottleneck (see `DeconvNet`)."""

    depth: int = 5
    convs: tuple[int, ...] = (2, 2, 3, 3, 3)
    fc_width: int | None = None
    fc_kernel: int = 7

    def check(self):
        super().check()
        if self.encoder != "vgg":
            raise ValueError(
                f"model {type(self).__name__}: encoder {self.encoder!r} cannot work: the decoder mirrors a VGG "
                "encoder's poolings; use encoder 'vgg', or unet / fcn with 'resnet50'."
            )

    def width(self, level: int) -> int:
        """VGG widths: base, 2*base, 4*base, 8*base, 8*base, ..."""
        return self.base_width * 2 ** min(level, 3)

    @nn.compact
    def network(self, x, train: bool):
        bayesian = self.fc_width is None and self.dropout > 0
        dropout_levels = tuple(range(max(self.depth - 3, 0), self.depth)) if bayesian else ()
        levels = self.encoder_module(
            widths=tuple(self.width(level) for level in range(self.depth)),
            convs=tuple(self.level_convs(level) for level in range(self.depth)),
            pool_indices=self.upsample.needs_indices,
            dropout=self.dropout,
            dropout_levels=dropout_levels,
        )(x, train)
        x = levels[-1].pooled
        if self.fc_width is not None:
            x = self._fc_bottleneck(x, train)
        for level in reversed(range(self.depth)):
            skip = levels[level]
            x = self.up_step(x.shape[-1], 2, name=f"up{level + 1}")(x, skip.indices, skip.features.shape[1:3])
            n = self.level_convs(level)
            widths = (self.width(level),) * (n - 1) + (self.width(max(level - 1, 0)),)
            x = ConvBlock(widths, self.norm, dtype=self.dtype, name=f"dec{level + 1}")(x, train)
            if level in dropout_levels:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)

    def _fc_bottleneck(self, x, train: bool):
        """DeconvNet's fc6 (fc_kernel), fc7 (1x1) with dropout, and deconv-fc6 back to the encoder width;
        each followed by norm and ReLU. Called from `network` (its submodules are named there)."""
        width = x.shape[-1]
        for name, features, kernel, drop in (
            ("fc6", self.fc_width, self.fc_kernel, True),
            ("fc7", self.fc_width, 1, True),
            ("deconv_fc6", width, self.fc_kernel, False),
        ):
            x = Conv(features, kernel, use_bias=not self.norm.normalises, dtype=self.dtype, name=name)(x)
            norm = self.norm(name=f"{name}_norm")
            x = nn.relu(x if norm is None else norm(x, train))
            if drop:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class DeconvNet(SegNet):
    """DeconvNet: SegNet's unpooling decoder plus VGG's fc6/fc7 (with dropout) in the middle."""

    fc_width: int | None = 4096
