"""VGG and ResNet-50/101 in torchvision's module layout (the same state-dict names and computation as
torchvision.models.vgg16 / vgg16_bn / resnet50 / resnet101), with a width factor, written in plain PyTorch so that
neither torchvision nor a download is needed. Used by the weight-loading tests when torch is installed, and by

    python tests/torchvision_layout.py

which writes the committed fixtures under tests/fixtures/pretrained/: {name}_tiny.safetensors, the networks at 1/16 of
their widths with random weights and batch-norm statistics stored as float16, and activations.npz, their outputs."""

import os

import numpy as np
import safetensors.numpy
import torch
from torch import nn

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pretrained")
WIDTH_DIVISOR = 16  # the fixtures: VGG16 64..512 -> 4..32 channels, ResNet-50 stem 64 -> 4


class VGG(nn.Module):
    """torchvision.models.VGG: features, avgpool, classifier (Linear(C*7*7, fc), ReLU, Dropout, Linear(fc, fc),
    ReLU, Dropout, Linear(fc, classes))."""

    def __init__(self, batch_norm: bool, divisor: int = 1, fc: int = 4096, classes: int = 1000):
        super().__init__()
        layers, channels = [], 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            v //= divisor
            layers += [nn.Conv2d(channels, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if batch_norm else [])
            layers.append(nn.ReLU(inplace=True))
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 49, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout()
        )
        self.classifier.append(nn.Linear(fc, classes))

    def levels(self, x):
        """Each level's output before its max pooling, and fc6 (before its ReLU) on a 224-px input."""
        out = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                out.append(x)
            x = layer(x)
        fc6 = self.classifier[0](torch.flatten(self.avgpool(x), 1)) if x.shape[-1] == 7 else None
        return out, fc6


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """torchvision.models.resnet50 (v1.5: stride in the 3x3), with replace_stride_with_dilation; `blocks` (3, 4, 23, 3)
    makes it resnet101."""

    def __init__(self, divisor: int = 1, dilation=(False, False, False), classes: int = 1000, blocks=(3, 4, 6, 3)):
        super().__init__()
        width = 64 // divisor
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, blocks[0])
        self.layer2 = self._make_layer(width * 2, blocks[1], 2, dilation[0])
        self.layer3 = self._make_layer(width * 4, blocks[2], 2, dilation[1])
        self.layer4 = self._make_layer(width * 8, blocks[3], 2, dilation[2])
        self.fc = nn.Linear(width * 32, classes)

    def _make_layer(self, planes, blocks, stride=1, dilate=False):
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def levels(self, x):
        """The stem's features (stride 2) and layer1..layer4's outputs."""
        x = self.relu(self.bn1(self.conv1(x)))
        out = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out


def randomise_batch_norm(net: nn.Module, seed: int) -> nn.Module:
    """Random affine parameters and running statistics, so that loading them is tested, not their defaults."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(c, generator=g)
            m.bias.data = 0.2 * torch.randn(c, generator=g)
            m.running_mean.data = 0.2 * torch.randn(c, generator=g)
            m.running_var.data = 0.5 + torch.rand(c, generator=g)
    return net.eval()


def as_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def as_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def as_float16(net: nn.Module) -> nn.Module:
    """Rounds the floating-point state to float16 (kept as float32), so the fixture can store it as float16 (half the
    size, and the float16 reading path tested) and the reference activations are those of the stored numbers."""
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return net


def state_arrays(net: nn.Module, dtype=np.float32) -> dict[str, np.ndarray]:
    return {k: v.numpy().astype(dtype) if v.is_floating_point() else v.numpy() for k, v in net.state_dict().items()}


def fixture_networks(seed: int = 0) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {
        "vgg16": VGG(False, WIDTH_DIVISOR, fc=16, classes=10).eval(),
        "vgg16_bn": randomise_batch_norm(VGG(True, WIDTH_DIVISOR, fc=16, classes=10), seed),
        "resnet50": randomise_batch_norm(ResNet(WIDTH_DIVISOR, classes=10), seed),
    }


# The fixtures' inputs: VGG at 32x64 (its levels) and at 224 px (fc6 sees the 7x7 map its Linear was made for), ResNet
# at an odd size (torchvision's explicit padding at every stride).
FIXTURE_INPUTS = {"vgg": (1, 32, 64, 3), "vgg_fc6": (1, 224, 224, 3), "resnet": (1, 45, 61, 3)}


def fixture_input(shape) -> np.ndarray:
    """A deterministic, non-trivial image batch (no random stream, so nothing needs storing)."""
    n = int(np.prod(shape))
    return (np.sin(np.arange(n) * 0.37) + 0.5 * np.cos(np.arange(n) * 0.011)).reshape(shape).astype(np.float32)


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    inputs = {k: fixture_input(s) for k, s in FIXTURE_INPUTS.items()}
    reference = {}
    with torch.no_grad():
        for name, net in fixture_networks().items():
            path = os.path.join(FIXTURES, f"{name}_tiny.safetensors")
            safetensors.numpy.save_file(state_arrays(as_float16(net), np.float16), path)
            if name.startswith("vgg"):
                levels, _ = net.levels(as_nchw(inputs["vgg"]))
                reference[f"{name}/fc6"] = net.levels(as_nchw(inputs["vgg_fc6"]))[1].numpy()
            else:
                levels = net.levels(as_nchw(inputs["resnet"]))
                dilated = ResNet(WIDTH_DIVISOR, (False, True, True), classes=10)
                dilated.load_state_dict(net.state_dict())
                reference[f"{name}/os8/layer4"] = as_nhwc(dilated.eval().levels(as_nchw(inputs["resnet"]))[-1])
            for i, level in enumerate(levels):
                reference[f"{name}/level{i}"] = as_nhwc(level)
    np.savez_compressed(os.path.join(FIXTURES, "activations.npz"), **reference)
    for f in sorted(os.listdir(FIXTURES)):
        print(f, os.path.getsize(os.path.join(FIXTURES, f)))


if __name__ == "__main__":
    main()
