"""The VGG-style encoder shared by FCN, SegNet, U-Net and DeconvNet, and what every encoder returns.

Parameter names (under the model's 'encoder'): 'block{i}/conv{j}/kernel' (HWIO) and, without norm,
'block{i}/conv{j}/bias'; with batch norm 'block{i}/norm{j}/scale', '.../bias' (params) and '.../mean', '.../var'
(batch_stats); with group norm 'block{i}/norm{j}/gn/scale', '.../bias'. Levels and convolutions count from 1 and 0:
VGG16's conv3_2 is 'block3/conv1'.
"""

from typing import Any, NamedTuple

import jax
from flax import linen as nn

from segjax.models.layers import ConvBlock, NormFactory, max_pool


class EncoderLevel(NamedTuple):
    """One level of an encoder: `features` before pooling (U-Net's skip; its spatial size is what max-unpooling
    restores), `stride` (of `features` with respect to the input), and the pooled map with its argmax indices (None
    where the level does not pool, or does not keep indices)."""

    features: jax.Array
    stride: int
    pooled: jax.Array | None = None
    indices: jax.Array | None = None


class VGGEncoder(nn.Module):
    """Level i: `convs[i]` 3x3 conv-norm-ReLU layers of `widths[i]` channels, then 2x2 max pooling (keeping its
    argmax indices when `pool_indices`), except after the last level when `pool_last` is False (U-Net's bottom).
    Dropout at rate `dropout` follows the pooling of the levels listed in `dropout_levels` (Bayesian SegNet).
    Returns one `EncoderLevel` per level."""

    widths: tuple[int, ...]
    convs: tuple[int, ...]
    norm: NormFactory
    pool_indices: bool = False
    pool_last: bool = True
    dropout: float = 0.0
    dropout_levels: tuple[int, ...] = ()
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool) -> tuple[EncoderLevel, ...]:
        levels = []
        for i, (width, n) in enumerate(zip(self.widths, self.convs, strict=True)):
            x = ConvBlock((width,) * n, self.norm, dtype=self.dtype, name=f"block{i + 1}")(x, train)
            level = EncoderLevel(x, 2**i)
            if self.pool_last or i < len(self.widths) - 1:
                x, indices = max_pool(x, with_indices=self.pool_indices)
                if i in self.dropout_levels:
                    x = nn.Dropout(self.dropout, deterministic=not train)(x)
                level = level._replace(pooled=x, indices=indices)
            levels.append(level)
        return tuple(levels)
