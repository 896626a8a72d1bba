"""`Upsample`: one linen module that builds any of the upsampling operators by name, so a model or a
config can swap the decoder's operator without touching the network code."""

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from segjax.ops.conv_transpose import conv_transpose
from segjax.ops.init import bilinear_kernel, icnr_init
from segjax.ops.pooling import max_unpool
from segjax.ops.resize import bed_of_nails, bilinear_upsample, nearest_upsample, pixel_shuffle

METHODS = ("nearest", "bilinear", "bed_of_nails", "max_unpool", "transposed", "resize_conv", "pixel_shuffle")
# Methods with learned parameters (they need `features`); the rest keep the channel count.
PARAMETRIC_METHODS = ("transposed", "resize_conv", "pixel_shuffle")
# Methods that need the encoder's pooling indices at call time.
INDEX_METHODS = ("max_unpool",)
# Valid `weight_init` values per method (the first is what None means).
INITS = {"transposed": ("default", "bilinear"), "pixel_shuffle": ("default", "icnr")}
RESIZES = ("nearest", "bilinear")
_FIXED = {"nearest": nearest_upsample, "bilinear": bilinear_upsample, "bed_of_nails": bed_of_nails}


def check_method(method: str) -> str:
    """Returns `method` if it names an upsampling operator, else raises a ValueError listing them."""
    if method not in METHODS:
        raise ValueError(f"Unknown upsampling method {method!r}; valid methods: {', '.join(METHODS)}.")
    return method


def has_params(method: str) -> bool:
    """Whether the operator has learned parameters (and so needs `features`)."""
    return check_method(method) in PARAMETRIC_METHODS


def needs_indices(method: str) -> bool:
    """Whether the operator needs max-pooling indices from the encoder (SegNet-style decoders)."""
    return check_method(method) in INDEX_METHODS


def default_kernel_size(method: str, factor: int, init: str | None = None) -> int | None:
    """Kernel size used when `kernel_size` is None: transposed = factor (FCN's 2*factor - factor % 2 for
    the bilinear init, the size at which it reproduces bilinear upsampling); resize_conv, pixel_shuffle = 3;
    None for parameter-free methods."""
    if check_method(method) == "transposed":
        return 2 * factor - factor % 2 if init == "bilinear" else factor
    return 3 if method in PARAMETRIC_METHODS else None


class Upsample(nn.Module):
    """Upsamples NHWC features by `factor` with the operator named by `method` (see METHODS).

    Output spatial size factor*H x factor*W, cropped to `output_size` when given (max_unpool: exactly
    `output_size`, default factor*H x factor*W; `indices` required). Parameter-free methods keep the
    channel count; learned ones output `features` channels.
      transposed: conv_transpose with kernel `kernel_size`, stride factor, SAME padding; weight_init
        'default' (lecun normal) or 'bilinear' (FCN; input channels a multiple of features, see bilinear_kernel).
      resize_conv: `resize` ('nearest' or 'bilinear') then a kernel_size conv (Odena et al. 2016).
      pixel_shuffle: conv to features*factor**2 channels then pixel_shuffle; weight_init 'default' or
        'icnr'.
    """

    method: str
    factor: int = 2
    features: int | None = None
    kernel_size: int | None = None
    # Named weight_init, not init: a field called `init` would shadow linen's Module.init method.
    weight_init: str | None = None
    resize: str = "nearest"
    use_bias: bool = True
    dtype: Any = None
    # max_unpool only: the indices come from non-overlapping pooling of a map of size output_size (see
    # `max_unpool`'s assume_in_cell).
    assume_in_cell: bool = False

    def _check(self, channels: int) -> tuple[int | None, str | None]:
        method = check_method(self.method)
        if not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"Upsample factor must be a positive int, got {self.factor!r}.")
        inits = INITS.get(method, ())
        if self.weight_init is not None and self.weight_init not in inits:
            valid = f"one of {inits}" if inits else "None (this method has no weight_init choice)"
            raise ValueError(
                f"Upsample(method={method!r}): weight_init {self.weight_init!r} is not valid; use {valid}."
            )
        init = self.weight_init or (inits[0] if inits else None)
        if method == "resize_conv" and self.resize not in RESIZES:
            raise ValueError(f"Upsample resize must be one of {RESIZES}, got {self.resize!r}.")
        if method in PARAMETRIC_METHODS:
            if self.features is None:
                raise ValueError(
                    f"Upsample(method={method!r}) has parameters and needs `features` (the number of output channels)."
                )
            kernel_size = self.kernel_size or default_kernel_size(method, self.factor, init)
            if not isinstance(kernel_size, int) or kernel_size < 1:
                raise ValueError(f"Upsample kernel_size must be a positive int, got {kernel_size!r}.")
        else:
            if self.features is not None and self.features != channels:
                raise ValueError(
                    f"Upsample(method={method!r}) keeps the channel count ({channels}); features={self.features} "
                    f"needs a learned method: {', '.join(PARAMETRIC_METHODS)}."
                )
            if self.kernel_size is not None:
                raise ValueError(
                    f"Upsample(method={method!r}) has no kernel; kernel_size must be None, got "
                    f"{self.kernel_size}. Methods with a kernel: {', '.join(PARAMETRIC_METHODS)}."
                )
            kernel_size = None
        return kernel_size, init

    @nn.compact
    def __call__(self, x, indices=None, output_size=None):
        if x.ndim != 4:
            raise ValueError(f"Upsample expects NHWC input, got shape {tuple(x.shape)}.")
        kernel_size, init = self._check(x.shape[-1])
        method, f = self.method, self.factor
        n, h, w, c = x.shape
        if method == "max_unpool":
            if indices is None:
                raise ValueError(
                    "Upsample(method='max_unpool') needs the encoder's pooling `indices` (from max_pool_with_indices)."
                )
            size = (h * f, w * f) if output_size is None else tuple(output_size)
            return max_unpool(x, indices, size, self.assume_in_cell)
        if indices is not None:
            raise ValueError(f"Upsample(method={method!r}) takes no indices; only {INDEX_METHODS} do.")
        if method in _FIXED:
            y = _FIXED[method](x, f)
        elif method == "transposed":
            if init == "bilinear":
                if c % self.features:
                    raise ValueError(
                        f"Upsample(method='transposed', weight_init='bilinear') upsamples each group of "
                        f"input channels on its own: the input channels ({c}) must be a multiple of features "
                        f"({self.features})."
                    )

                def kernel_init(key, shape, dtype=jnp.float32):
                    return bilinear_kernel(shape[0], c, self.features, dtype)
            else:
                kernel_init = nn.initializers.lecun_normal()
            kernel = self.param("kernel", kernel_init, (kernel_size, kernel_size, c, self.features), jnp.float32)
            x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
            y = conv_transpose(x, kernel, f, "SAME")
            if self.use_bias:
                bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
                y = y + jnp.asarray(bias, y.dtype)
        elif method == "resize_conv":
            y = nearest_upsample(x, f) if self.resize == "nearest" else bilinear_upsample(x, f)
            y = nn.Conv(
                self.features,
                (kernel_size, kernel_size),
                padding="SAME",
                use_bias=self.use_bias,
                dtype=self.dtype,
                name="conv",
            )(y)
        else:  # pixel_shuffle
            kernel_init = icnr_init(factor=f) if init == "icnr" else nn.initializers.lecun_normal()
            y = nn.Conv(
                self.features * f * f,
                (kernel_size, kernel_size),
                padding="SAME",
                use_bias=self.use_bias,
                kernel_init=kernel_init,
                dtype=self.dtype,
                name="conv",
            )(x)
            y = pixel_shuffle(y, f)
        if output_size is not None:
            oh, ow = output_size
            if oh > y.shape[1] or ow > y.shape[2]:
                raise ValueError(
                    f"Upsample(method={method!r}): output_size {tuple(output_size)} is larger than "
                    f"the upsampled size {y.shape[1:3]}; only cropping is supported."
                )
            y = y[:, :oh, :ow, :]
        return y
