"""Fully convolutional networks (Long, Shelhamer & Darrell 2015): FCN-32s, FCN-16s, FCN-8s.

VGG-style encoder (5 levels of 3x3 conv-norm-ReLU blocks, each followed by 2x2 max pooling: stride 32),
fc6 / fc7 as convolutions with dropout, a 1x1 class-score layer, then the decoder:
  32s: upsample the score map by 32;
  16s: upsample it by 2, add a 1x1 score of pool4 (zero-initialised, as in the paper), upsample by 16;
  8s:  as 16s, then by 2 again plus a score of pool3, upsample by 8.
The paper's decoder is a transposed convolution initialised to bilinear interpolation (kernel 2f - f%2,
no bias), which is the default here. With the ResNet-50 encoder (`encoder='resnet50'`) the class scores come from
its last layer (after dropout, no fc layers) and the skips from the layers at half and a quarter of its output
stride (dilated encoders: output stride 8 or 16). Deviations: 'SAME' padding plus padding the input to a multiple of
32 instead of the paper's 100-pixel padding and crop layers; the fc6 kernel is a preset value (7 as in VGG
for 'paper', 3 for 'small'); norm is configurable (the paper has none).
"""

from typing import ClassVar

from flax import linen as nn

from segjax.models.base import EncoderDecoder
from segjax.models.layers import Conv


class FCN(EncoderDecoder):
    """FCN with `skips` fusions (0: FCN-32s, 1: FCN-16s with pool4, 2: FCN-8s with pool3 too)."""

    depth: int = 5
    convs: tuple[int, ...] = (2, 2, 3, 3, 3)
    fc_width: int = 4096
    fc_kernel: int = 7
    skips: int = 0

    unsupported_methods: ClassVar[dict] = {
        "max_unpool": (
            "FCN upsamples class-score maps by 8-32 in one step, which no single pooling's "
            "indices describe (use segnet, unet or deconvnet for max_unpool)"
        ),
    }

    @property
    def stride(self) -> int:
        return 32

    def width(self, level: int) -> int:
        """VGG widths: base, 2*base, 4*base, 8*base, 8*base."""
        return self.base_width * 2 ** min(level, 3)

    @nn.compact
    def network(self, x, train: bool):
        levels = self.encoder_module(
            widths=tuple(self.width(level) for level in range(5)),
            convs=tuple(self.level_convs(level) for level in range(5)),
        )(x, train)
        outputs = {level.output_stride: level.output for level in levels}  # the deepest map at each stride
        x, stride = levels[-1].output, levels[-1].output_stride
        if self.encoder == "vgg":
            for i, kernel in enumerate((self.fc_kernel, 1)):
                x = nn.relu(Conv(self.fc_width, kernel, dtype=self.dtype, name=f"fc{6 + i}")(x))
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        else:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        score = Conv(self.num_classes, 1, dtype=self.dtype, name="score_fr")(x)
        for i in range(self.skips):
            if stride // 2 not in outputs:
                raise ValueError(
                    f"{type(self).__name__}: skip {i + 1} needs an encoder map at stride {stride // 2}; with the "
                    f"encoder's output stride {self.output_stride} use fewer skips or a larger output_stride."
                )
            pool = outputs[stride // 2]  # VGG: pool4 (stride 16), then pool3 (stride 8)
            up = self.up_step(self.num_classes, 2, use_bias=False, name=f"upscore{i + 1}")(score)
            skip = Conv(
                self.num_classes,
                1,
                kernel_init=nn.initializers.zeros_init(),
                dtype=self.dtype,
                name=f"score_pool{4 - i}",
            )(pool)
            score = up + skip
            stride //= 2
        return self.up_step(self.num_classes, stride, use_bias=False, name="upscore_final")(score)


class FCN32s(FCN):
    """FCN-32s: the class-score map upsampled by 32 in one step."""

    skips: int = 0


class FCN16s(FCN):
    """FCN-16s: the score map upsampled by 2, fused with pool4's score, upsampled by 16."""

    skips: int = 1


class FCN8s(FCN):
    """FCN-8s: FCN-16s fused once more with pool3's score, then upsampled by 8."""

    skips: int = 2
