"""Upsampling operators for encoder-decoder segmentation networks (NHWC, jit-able, differentiable).

Pure functions: pooling with indices and unpooling, bed of nails, nearest and bilinear upsampling,
pixel shuffle, a fast transposed convolution, the bilinear and ICNR initialisers and the checkerboard
score; plus the linen `Upsample` module that picks an operator by name.
"""

from segjax.ops.checkerboard import checkerboard_region, checkerboard_score, local_mean_kernel
from segjax.ops.conv_transpose import conv_transpose
from segjax.ops.init import bilinear_kernel, delta_kernel, icnr_init
from segjax.ops.pooling import max_pool_with_indices, max_unpool
from segjax.ops.resize import bed_of_nails, bilinear_upsample, nearest_upsample, pixel_shuffle, pixel_unshuffle
from segjax.ops.upsample import (
    INDEX_METHODS,
    INITS,
    METHODS,
    PARAMETRIC_METHODS,
    Upsample,
    UpsampleSpec,
    check_method,
    default_kernel_size,
    has_params,
    needs_indices,
)

__all__ = [
    "INDEX_METHODS",
    "INITS",
    "METHODS",
    "PARAMETRIC_METHODS",
    "Upsample",
    "UpsampleSpec",
    "bed_of_nails",
    "bilinear_kernel",
    "bilinear_upsample",
    "check_method",
    "checkerboard_region",
    "checkerboard_score",
    "local_mean_kernel",
    "conv_transpose",
    "delta_kernel",
    "default_kernel_size",
    "has_params",
    "icnr_init",
    "max_pool_with_indices",
    "max_unpool",
    "nearest_upsample",
    "needs_indices",
    "pixel_shuffle",
    "pixel_unshuffle",
]
