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
"""

from typing import ClassVar

import jax.numpy as jnp
from flax import linen as nn

from segjax.models.base import EncoderDecoder
from segjax.models.encoder import VGGEncoder
from segjax.models.layers import Conv, ConvBlock


class UNet(EncoderDecoder):
    """U-Net with `depth` poolings and widths base_width * 2**level."""

    unsupported_methods: ClassVar[dict] = {}
    skips: bool = True  # False: no concatenation, a plain encoder-decoder (to ablate what the skips hide)

    def width(self, level: int) -> int:
        return self.base_width * 2**level

    @nn.compact
    def network(self, x, train: bool):
        levels = VGGEncoder(
            tuple(self.width(level) for level in range(self.depth + 1)),
            tuple(self.level_convs(level) for level in range(self.depth + 1)),
            self.norm,
            pool_indices=self.upsample.needs_indices,
            pool_last=False,
            dtype=self.dtype,
            name="encoder",
        )(x, train)
        x = nn.Dropout(self.dropout, deterministic=not train)(levels[-1].features)
        for level in reversed(range(self.depth)):
            skip = levels[level]
            x = self.up_step(self.width(level), 2, name=f"up{level + 1}")(x, skip.indices, skip.features.shape[1:3])
            if self.skips:
                x = jnp.concatenate([skip.features, x], axis=-1)
            widths = (self.width(level),) * self.level_convs(level)
            x = ConvBlock(widths, self.norm, dtype=self.dtype, name=f"upblock{level + 1}")(x, train)
        return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)
