"""U-Net (Ronneberger, Fischer & Brox 2015).

Contracting path: `depth` levels of two 3x3 conv-norm-ReLU layers (widths base * 2**level) each followed
by 2x2 max pooling; a bottom block (base * 2**depth) with dropout at the end of the contracting path.
Expanding path: per level an "up-convolution" that doubles the resolution and halves the channels (the
paper's 2x2 transposed convolution, the default), concatenation with the contracting path's features at
that level (unless `skips=False`), and two 3x3 conv-norm-ReLU layers; a 1x1 convolution gives the class
scores.

Deviation from the paper: 'SAME' convolutions (the paper's are 'VALID' and crop the skips), so the output
covers the whole (padded) input. Parameter-free upsampling methods halve the channels with a 1x1
convolution before upsampling (see `UpStep`); max_unpool uses the indices of the pooling at the same level.

With the ResNet-50 encoder (`encoder='resnet50'`, depth 5) the skips are its stem (stride 2) and layer1..layer3, the
bottom is layer4, and a last up-step without a skip returns to the input's resolution (as
segmentation_models.pytorch's U-Net does).
"""

from typing import ClassVar

import jax.numpy as jnp
from flax import linen as nn

from segjax.models.base import EncoderDecoder
from segjax.models.encoder import EncoderLevel
from segjax.models.layers import Conv, ConvBlock


class UNet(EncoderDecoder):
    """U-Net with `depth` poolings and widths base_width * 2**level."""

    unsupported_methods: ClassVar[dict] = {}
    skips: bool = True  # False: no concatenation, a plain encoder-decoder (to ablate what the skips hide)

    def width(self, level: int) -> int:
        return self.base_width * 2**level

    def check(self):
        super().check()
        if self.encoder == "resnet50" and (self.output_stride != 32 or self.upsample.needs_indices):
            raise ValueError(
                f"model UNet: the ResNet-50 encoder needs output_stride 32 (got {self.output_stride}: the decoder "
                f"doubles the resolution at every level) and an upsampling method other than max_unpool (got "
                f"{self.upsample.method!r}: ResNet keeps no pooling indices)."
            )

    @nn.compact
    def network(self, x, train: bool):
        levels = self.encoder_module(
            widths=tuple(self.width(level) for level in range(self.depth + 1)),
            convs=tuple(self.level_convs(level) for level in range(self.depth + 1)),
            pool_indices=self.upsample.needs_indices,
            pool_last=False,
        )(x, train)
        x = nn.Dropout(self.dropout, deterministic=not train)(levels[-1].features)
        for deeper, skip in reversed(tuple(zip(levels[1:], levels[:-1], strict=True))):
            x = self.up_level(x, skip, deeper.stride // skip.stride, train)
        if levels[0].stride > 1:  # ResNet's first level is at stride 2: a last step without a skip
            x = self.up_level(x, EncoderLevel(None, 1), levels[0].stride, train)
        return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)

    def up_level(self, x, skip: EncoderLevel, factor: int, train: bool):
        """Up by `factor` to the skip's stride, concatenate its features (if any and `skips`), convolve; the layers
        named up{level + 1} and upblock{level + 1} for the level at stride 2**level."""
        level = skip.stride.bit_length() - 1
        size = None if skip.features is None else skip.features.shape[1:3]
        x = self.up_step(self.width(level), factor, name=f"up{level + 1}")(x, skip.indices, size)
        if self.skips and skip.features is not None:
            x = jnp.concatenate([skip.features, x], axis=-1)
        widths = (self.width(level),) * self.level_convs(level)
        return ConvBlock(widths, self.norm, dtype=self.dtype, name=f"upblock{level + 1}")(x, train)
