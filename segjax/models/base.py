"""`EncoderDecoder`: what every network shares (fields, widths, the upsampling choice and its checks,
padding any input size to the network's stride and cropping the logits back)."""

from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from segjax import ops
from segjax.models.layers import UpStep, pad_to_multiple


class EncoderDecoder(nn.Module):
    """Base of the segmentation networks: images (N, H, W, 3), any H, W -> logits (N, H, W, classes).

    Subclasses implement `network(x, train)` on inputs padded to `stride` (zeros at the bottom/right);
    `__call__` pads and crops, so no input has to be divisible by 32. (Batch-norm statistics in training
    then include the padded zeros; feed sizes divisible by `stride` where that matters.)
    """

    num_classes: int
    base_width: int = 16
    depth: int = 4
    convs: tuple[int, ...] = (2,)
    norm: str = "batch"
    dropout: float = 0.0
    upsample_method: str = "transposed"
    upsample_kernel_size: int | None = None
    upsample_init: str | None = None
    upsample_resize: str = "nearest"
    axis_name: str | None = None
    dtype: Any = jnp.float32

    # Methods this network cannot use, with the reason (filled in by subclasses).
    unsupported_methods: ClassVar[dict] = {}

    @property
    def stride(self) -> int:
        return 2**self.depth

    def level_convs(self, level: int) -> int:
        return self.convs[level % len(self.convs)]

    def check_upsample(self):
        """Raises a ValueError naming the model, the method and what works, for impossible choices."""
        name = type(self).__name__
        method = ops.check_method(self.upsample_method)
        reasons = type(self).unsupported_methods or {}
        if method in reasons:
            valid = [m for m in ops.METHODS if m not in reasons]
            raise ValueError(
                f"model {name}: upsample method {method!r} cannot work: {reasons[method]}. "
                f"Valid methods for {name}: {', '.join(valid)}."
            )
        inits = ops.INITS.get(method, ())
        if self.upsample_init is not None and self.upsample_init not in inits:
            valid = f"one of {inits}" if inits else "None (this method has no init choice)"
            raise ValueError(
                f"model {name}: upsample.init={self.upsample_init!r} is not valid for method {method!r}; use {valid}."
            )
        if self.upsample_kernel_size is not None and not ops.has_params(method):
            raise ValueError(
                f"model {name}: upsample.kernel_size={self.upsample_kernel_size} has no effect "
                f"with the parameter-free method {method!r}; set it to None, or use one of "
                f"{', '.join(ops.PARAMETRIC_METHODS)}."
            )
        if self.upsample_resize not in ("nearest", "bilinear"):
            raise ValueError(
                f"model {name}: upsample.resize must be 'nearest' or 'bilinear', got {self.upsample_resize!r}."
            )
        if self.num_classes < 1:
            raise ValueError(f"model {name}: num_classes must be >= 1, got {self.num_classes}.")

    @property
    def uses_indices(self) -> bool:
        return ops.needs_indices(self.upsample_method)

    def up_step(self, features: int, factor: int = 2, *, use_bias: bool = True, name: str):
        """The configured upsampling step (see `UpStep`)."""
        return UpStep(
            self.upsample_method,
            features,
            factor,
            self.upsample_kernel_size,
            self.upsample_init,
            self.upsample_resize,
            use_bias,
            self.dtype,
            name=name,
        )

    def network(self, x, train: bool):
        raise NotImplementedError

    def __call__(self, images, train: bool = False):
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (N, H, W, C), got shape {images.shape}.")
        self.check_upsample()
        x, (h, w) = pad_to_multiple(jnp.asarray(images, self.dtype), self.stride)
        logits = self.network(x, train)
        return logits[:, :h, :w, :].astype(jnp.float32)
