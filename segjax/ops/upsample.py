"""`Upsample`: one linen module that builds any of the upsampling operators by name, so a model or a
config can swap the decoder's operator without touching the network code."""

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from segjax.ops.conv_transpose import conv_transpose
from segjax.ops.init import bilinear_kernel, delta_kernel, icnr_init
from segjax.ops.pooling import max_unpool
from segjax.ops.resize import bed_of_nails, bilinear_upsample, nearest_upsample, pixel_shuffle

METHODS = ("nearest", "bilinear", "bed_of_nails", "max_unpool", "transposed", "resize_conv", "pixel_shuffle")
# Methods with learned parameters (they need `features`); the rest keep the channel count.
PARAMETRIC_METHODS = ("transposed", "resize_conv", "pixel_shuffle")
# Methods that need the encoder's pooling indices at call time.
INDEX_METHODS = ("max_unpool",)
# Valid `init` values per method (the first is what None means).
INITS = {
    "transposed": ("default", "bilinear"),
    "pixel_shuffle": ("default", "icnr"),
    "resize_conv": ("default", "delta"),
}
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


@dataclasses.dataclass(frozen=True)
class UpsampleSpec:
    """Which upsampling operator, validated once: `method` (see METHODS); `kernel_size` of the learned methods (None:
    `default_kernel_size`), or for a parameter-free method the kernel of the convolution that maps its channels in a
    network (`segjax.models.layers.UpStep`; None: 1x1; 2x2 before a 2x bilinear upsampling has the parameters of a 2x2
    transposed convolution, for compute-matched ablations); `init` of the transposed convolution ('default' lecun normal
    or 'bilinear'), of pixel shuffle ('default' or 'icnr') or of resize_conv ('default' or 'delta'), None meaning the
    first; `resize` before resize_conv's convolution ('nearest' or 'bilinear'). Frozen and hashable, so models and steps
    holding one compare equal when their operators do."""

    method: str = "transposed"
    kernel_size: int | None = None
    init: str | None = None
    resize: str = "nearest"

    def __post_init__(self):
        method = check_method(self.method)
        inits = INITS.get(method, ())
        if self.init is not None and self.init not in inits:
            valid = f"one of {inits}" if inits else "None (this method has no init choice)"
            raise ValueError(f"upsample.init={self.init!r} is not valid for method {method!r}; use {valid}.")
        if self.kernel_size is not None:
            if not isinstance(self.kernel_size, int) or isinstance(self.kernel_size, bool) or self.kernel_size < 1:
                raise ValueError(f"upsample.kernel_size must be a positive int or None, got {self.kernel_size!r}.")
        if self.resize not in RESIZES:
            raise ValueError(f"upsample.resize must be one of {RESIZES}, got {self.resize!r}.")

    @property
    def has_params(self) -> bool:
        return self.method in PARAMETRIC_METHODS

    @property
    def needs_indices(self) -> bool:
        return self.method in INDEX_METHODS

    @property
    def weight_init(self) -> str | None:
        """The init in effect (None's meaning filled in), or None for methods without a choice."""
        inits = INITS.get(self.method, ())
        return self.init or (inits[0] if inits else None)

    def kernel_size_for(self, factor: int) -> int | None:
        """The kernel size in effect at `factor`."""
        return self.kernel_size or default_kernel_size(self.method, factor, self.weight_init)


class Upsample(nn.Module):
    """Upsamples NHWC features by `factor` with the operator `spec` describes (see METHODS, UpsampleSpec).

    Output spatial size factor*H x factor*W, cropped to `output_size` when given (max_unpool: exactly
    `output_size`, default factor*H x factor*W; `indices` required). Parameter-free methods keep the
    channel count; learned ones output `features` channels.
      transposed: conv_transpose with the spec's kernel size, stride factor, SAME padding; init 'default' (lecun
        normal) or 'bilinear' (FCN; input channels a multiple of features, see bilinear_kernel).
      resize_conv: resize ('nearest' or 'bilinear') then a convolution (Odena et al. 2016); init 'default' (lecun
        normal) or 'delta' (the centre tap averages channel groups: it starts as the resize; see delta_kernel).
      pixel_shuffle: conv to features*factor**2 channels then pixel_shuffle; init 'default' or 'icnr'.
    """

    spec: UpsampleSpec
    factor: int = 2
    features: int | None = None
    use_bias: bool = True
    dtype: Any = None
    # max_unpool only: the indices come from non-overlapping pooling of a map of size output_size (see
    # `max_unpool`'s assume_in_cell).
    assume_in_cell: bool = False

    def _check(self, channels: int):
        if not isinstance(self.spec, UpsampleSpec):
            raise TypeError(f"Upsample expects an UpsampleSpec, got {self.spec!r}.")
        method = self.spec.method
        if not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"Upsample factor must be a positive int, got {self.factor!r}.")
        if self.spec.has_params and self.features is None:
            raise ValueError(
                f"Upsample(method={method!r}) has parameters and needs `features` (the number of output channels)."
            )
        if not self.spec.has_params and self.features is not None and self.features != channels:
            raise ValueError(
                f"Upsample(method={method!r}) keeps the channel count ({channels}); features={self.features} "
                f"needs a learned method: {', '.join(PARAMETRIC_METHODS)}."
            )
        grouped = {("transposed", "bilinear"): "upsamples", ("resize_conv", "delta"): "averages"}
        action = grouped.get((method, self.spec.weight_init))
        if action and channels % self.features:
            raise ValueError(
                f"Upsample(method={method!r}, init={self.spec.weight_init!r}) {action} each group of input channels on "
                f"its own: the input channels ({channels}) must be a multiple of features ({self.features})."
            )

    def _conv(self, features: int, kernel_size: int, kernel_init) -> nn.Conv:
        """The learned convolution of resize_conv (after the resize) and pixel_shuffle (before the shuffle)."""
        return nn.Conv(
            features,
            (kernel_size, kernel_size),
            padding="SAME",
            use_bias=self.use_bias,
            kernel_init=kernel_init,
            dtype=self.dtype,
            name="conv",
        )

    @nn.compact
    def __call__(self, x, indices=None, output_size=None):
        if x.ndim != 4:
            raise ValueError(f"Upsample expects NHWC input, got shape {tuple(x.shape)}.")
        self._check(x.shape[-1])
        spec, f = self.spec, self.factor
        method, init, kernel_size = spec.method, spec.weight_init, spec.kernel_size_for(f)
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
            if init == "delta":

                def kernel_init(key, shape, dtype=jnp.float32):
                    return delta_kernel(shape[0], shape[2], shape[3], dtype)
            else:
                kernel_init = nn.initializers.lecun_normal()
            y = nearest_upsample(x, f) if spec.resize == "nearest" else bilinear_upsample(x, f)
            y = self._conv(self.features, kernel_size, kernel_init)(y)
        else:  # pixel_shuffle
            kernel_init = icnr_init(factor=f) if init == "icnr" else nn.initializers.lecun_normal()
            y = pixel_shuffle(self._conv(self.features * f * f, kernel_size, kernel_init)(x), f)
        if output_size is not None:
            oh, ow = output_size
            if oh > y.shape[1] or ow > y.shape[2]:
                raise ValueError(
                    f"Upsample(method={method!r}): output_size {tuple(output_size)} is larger than "
                    f"the upsampled size {y.shape[1:3]}; only cropping is supported."
                )
            y = y[:, :oh, :ow, :]
        return y
