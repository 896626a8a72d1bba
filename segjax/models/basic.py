"""The networks of SegNet's decoder study (Badrinarayanan, Kendall & Cipolla 2017, Section 4 and Table 1).

One encoder, SegNet-Basic's: 4 levels, each one 7x7 convolution of `base_width` (64) channels, batch norm, ReLU and
2x2 max pooling (stride 16 in all). Four decoders on it:
  segnet_basic: per level max-unpooling with the encoder's indices, then one 7x7 convolution of `base_width`
    channels with batch norm and no ReLU ("no non-linearity in the decoder"); a 1x1 convolution gives the classes.
  fcn_basic: FCN's decoder: class scores (1x1) of the deepest map; per level upsampled 2x by a learned transposed
    convolution (bilinear-initialised, kernel 4), the level's encoder features reduced to the classes by a 1x1
    convolution added, then a 7x7 convolution of `num_classes` channels with batch norm; a 1x1 classifier.
  fcn_basic_noaddition: fcn_basic without adding the encoder features.
  bilinear_basic: no learned decoder ("Bilinear-Interpolation"): class scores (1x1) of the deepest map upsampled 16x
    by fixed bilinear interpolation.
With 64 channels and 11 classes (CamVid) they have 1,416,075 / 647,287 / 644,427 / 612,747 parameters; the paper's
Table 1 gives 1.425M / 0.65M / 0.65M / 0.625M. The upsampling operator of segnet_basic and fcn_basic is
`model.upsample` (max_unpool and a bilinear-initialised transposed convolution by default).
"""

from typing import ClassVar

from flax import linen as nn

from segjax.models.base import EncoderDecoder
from segjax.models.layers import Conv

KERNEL = 7  # SegNet-Basic's 7x7 convolutions: a 106x106 receptive field at the deepest level


class SegNetBasic(EncoderDecoder):
    """SegNet-Basic: its encoder and decoder; the subclasses change `decoder` (see the module docstring)."""

    depth: int = 4
    convs: tuple[int, ...] = (1,)
    decoder: ClassVar[str] = "segnet"  # 'segnet', 'fcn', 'fcn_noaddition' or 'bilinear'

    def check(self):
        super().check()
        if self.encoder != "vgg":
            raise ValueError(f"model {type(self).__name__}: encoder {self.encoder!r} cannot work: use 'vgg'.")

    @nn.compact
    def network(self, x, train: bool):
        levels = self.encoder_module(
            widths=(self.base_width,) * self.depth,
            convs=(1,) * self.depth,
            pool_indices=self.upsample.needs_indices,
            kernel_size=KERNEL,
        )(x, train)
        x = levels[-1].pooled
        if self.decoder == "bilinear":
            score = Conv(self.num_classes, 1, dtype=self.dtype, name="score")(x)
            return self.up_step(self.num_classes, self.stride, name="upscore")(score)
        if self.decoder == "segnet":
            width = self.base_width
        else:
            width = self.num_classes
            x = Conv(width, 1, dtype=self.dtype, name="score")(x)
        for level in reversed(range(self.depth)):
            skip = levels[level]
            x = self.up_step(width, 2, use_bias=False, name=f"up{level + 1}")(x, skip.indices, skip.features.shape[1:3])
            if self.decoder == "fcn":
                x = x + Conv(width, 1, dtype=self.dtype, name=f"reduce{level + 1}")(skip.features)
            x = Conv(width, KERNEL, use_bias=not self.norm.normalises, dtype=self.dtype, name=f"dec{level + 1}")(x)
            norm = self.norm(name=f"dec{level + 1}_norm")
            if norm is not None:
                x = norm(x, train)
        return Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)


_SCORE_MAPS = (
    "{name} decodes class-score maps, which the encoder's pooling indices (one per feature channel) do not describe "
    "(use segnet_basic for max_unpool)"
)


class FCNBasic(SegNetBasic):
    """FCN-Basic: FCN's decoder (learned 2x upsampling of class scores plus 1x1-reduced encoder features)."""

    decoder: ClassVar[str] = "fcn"
    unsupported_methods: ClassVar[dict] = {"max_unpool": _SCORE_MAPS.format(name="FCN-Basic")}


class FCNBasicNoAddition(SegNetBasic):
    """FCN-Basic-NoAddition: FCN-Basic without the encoder features."""

    decoder: ClassVar[str] = "fcn_noaddition"
    unsupported_methods: ClassVar[dict] = {"max_unpool": _SCORE_MAPS.format(name="FCN-Basic-NoAddition")}


class BilinearBasic(SegNetBasic):
    """SegNet-Basic's encoder and no learned decoder: class scores upsampled 16x (fixed bilinear by default)."""

    decoder: ClassVar[str] = "bilinear"
    unsupported_methods: ClassVar[dict] = {
        "max_unpool": "it upsamples by 16 in one step, which no single pooling's indices describe (use segnet_basic)"
    }


def decoder_storage_bytes(model: SegNetBasic, height: int, width: int) -> dict[str, int]:
    """What the decoder keeps from the encoder for one `height` x `width` image (padded to the stride), the paper's
    memory trade-off: 'paper' counts it as Table 1 does (SegNet-Basic: its pooling indices, 2 bits per channel and
    2x2 window; FCN-Basic: the encoder maps reduced to the classes, float32; the others nothing), 'as_implemented'
    as segjax holds it (int32 indices; FCN-Basic reduces the stored 64-channel maps in the decoder)."""
    h, w = (-(-size // model.stride) * model.stride for size in (height, width))
    pooled = sum((h >> (i + 1)) * (w >> (i + 1)) for i in range(model.depth))
    full = sum((h >> i) * (w >> i) for i in range(model.depth))
    if model.upsample.needs_indices:
        return {"paper": pooled * model.base_width * 2 // 8, "as_implemented": pooled * model.base_width * 4}
    if model.decoder == "fcn":
        return {"paper": full * model.num_classes * 4, "as_implemented": full * model.base_width * 4}
    return {"paper": 0, "as_implemented": 0}
