"""`EncoderDecoder`: what every network shares (fields, widths, the upsampling choice and its checks,
padding any input size to the network's stride and cropping the logits back)."""

from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from segjax import ops
from segjax.models.encoder import ENCODERS, OUTPUT_STRIDES, ResNet50Encoder, VGGEncoder
from segjax.models.layers import NormFactory, UpStep, pad_to_multiple


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
    norm: NormFactory = NormFactory()
    dropout: float = 0.0
    upsample: ops.UpsampleSpec = ops.UpsampleSpec("transposed")
    encoder: str = "vgg"  # or 'resnet50' (U-Net and FCN)
    output_stride: int = 32  # of the ResNet-50 encoder: 16 or 8 dilate its last layers instead
    dtype: Any = jnp.float32

    # Methods this network cannot use, with the reason (filled in by subclasses).
    unsupported_methods: ClassVar[dict] = {}

    @property
    def stride(self) -> int:
        return 2**self.depth

    def level_convs(self, level: int) -> int:
        return self.convs[level % len(self.convs)]

    def check(self):
        """Raises a ValueError naming the model and what works, for a choice this network cannot use (the specs
        validate themselves); `create_model` runs it once, when the network is built."""
        name = type(self).__name__
        method = self.upsample.method
        reasons = type(self).unsupported_methods or {}
        if method in reasons:
            valid = [m for m in ops.METHODS if m not in reasons]
            raise ValueError(
                f"model {name}: upsample method {method!r} cannot work: {reasons[method]}. "
                f"Valid methods for {name}: {', '.join(valid)}."
            )
        if self.encoder not in ENCODERS:
            raise ValueError(f"model {name}: unknown encoder {self.encoder!r}; valid: {', '.join(ENCODERS)}.")
        if self.output_stride not in OUTPUT_STRIDES or (self.encoder != "resnet50" and self.output_stride != 32):
            raise ValueError(
                f"model {name}: output_stride={self.output_stride} is not valid; use 32, or 16 / 8 with encoder "
                "'resnet50' (the VGG encoder's is 32)."
            )
        if self.encoder == "resnet50" and not self.norm.normalises:
            raise ValueError(
                f"model {name}: the ResNet-50 encoder needs norm 'batch' or 'group' (its blocks are built around it)."
            )
        if self.num_classes < 1:
            raise ValueError(f"model {name}: num_classes must be >= 1, got {self.num_classes}.")

    def encoder_module(self, **vgg) -> nn.Module:
        """The configured encoder, named 'encoder': ResNet-50 of width base_width, or a VGGEncoder with the fields
        `vgg` (widths, convs, pooling, dropout)."""
        if self.encoder == "resnet50":
            return ResNet50Encoder(self.base_width, self.norm, self.output_stride, self.dtype, name="encoder")
        return VGGEncoder(norm=self.norm, dtype=self.dtype, name="encoder", **vgg)

    def up_step(self, features: int, factor: int = 2, *, use_bias: bool = True, name: str) -> UpStep:
        """The configured upsampling step (see `UpStep`)."""
        return UpStep(self.upsample, features, factor, use_bias, self.dtype, name=name)

    def network(self, x, train: bool):
        raise NotImplementedError

    def __call__(self, images, train: bool = False):
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (N, H, W, C), got shape {images.shape}.")
        x, (h, w) = pad_to_multiple(jnp.asarray(images, self.dtype), self.stride)
        logits = self.network(x, train)
        return logits[:, :h, :w, :].astype(jnp.float32)
