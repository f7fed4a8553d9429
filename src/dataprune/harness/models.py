"""Models for the training harness: plain ``torch.nn``, one place for each.

All models take N x C x H x W float input and return N x num_classes logits. They contain no
device-specific code, so ``model.to("cuda")`` and ``model.to(memory_format=torch.channels_last)``
work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import InvalidValue

__all__ = ["MODELS", "BasicBlock", "ResNet", "SmallCNN", "build_model"]


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build model ``name`` (one of :data:`MODELS`) for ``in_channels`` x ``image_size`` x
    ``image_size`` images and ``num_classes`` classes."""
    if name not in MODELS:
        raise InvalidValue(f"model={name!r} is not known; choose one of: {', '.join(MODELS)}")
    if in_channels < 1 or num_classes < 1 or image_size < 1:
        raise InvalidValue(
            f"need positive in_channels, num_classes and image_size, got "
            f"{in_channels}, {num_classes}, {image_size}"
        )
    return MODELS[name](in_channels, num_classes, image_size)


def mlp(in_features: int, num_classes: int, hidden: int = 256) -> nn.Sequential:
    """Two hidden layers of ``hidden`` ReLU units on the flattened image."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """A small conv net: three conv3x3-BN-ReLU blocks (max-pool after the first two), global
    average pooling and a linear classifier. Works for any input size >= 4 (8x8 digits, 28x28,
    32x32).

    The default widths (16, 32, 64) keep one Fashion-MNIST epoch (60k images, batch 256) at
    about 12 s on 2 CPU cores; (32, 64, 128) is ~4x the compute (~33 s there).
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)
    ):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w1, w2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w2, w3),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(w3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N x num_classes) for images ``x`` (N x C x H x W)."""
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """The ResNet basic block: two conv3x3-BN layers plus a shortcut (identity, or a 1x1
    conv + BN projection when the stride or width changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem conv (stride 1, no max-pool), stages of
    :class:`BasicBlock` (the first stage at stride 1, the others at stride 2), global average
    pooling and a linear classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
    ):
        super().__init__()
        if len(widths) != len(blocks):
            raise InvalidValue("widths and blocks must have the same length")
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, widths[0]))
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, width, stride))
                cin = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N x num_classes) for images ``x`` (N x C x H x W)."""
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(in_channels: int, num_classes: int) -> ResNet:
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2] with widths 64, 128, 256, 512 (~11M params)."""
    return ResNet(in_channels, num_classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2))


def resnet20(in_channels: int, num_classes: int) -> ResNet:
    """He et al. (2016) CIFAR ResNet-20: 3 stages of 3 BasicBlocks, widths 16/32/64, with
    1x1 conv + BN projection shortcuts (~0.27M params)."""
    return ResNet(in_channels, num_classes, widths=(16, 32, 64), blocks=(3, 3, 3))


#: The models, by name: each builds from (in_channels, num_classes, image_size).
MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {
    # two hidden layers of 256 ReLU units on the flattened image
    "mlp": lambda channels, classes, size: mlp(channels * size * size, classes),
    # a small, fast 3-block conv net for CPU runs
    "cnn": lambda channels, classes, size: SmallCNN(channels, classes),
    # the CIFAR ResNet-18 (3x3 stem, no max-pool, widths 64..512)
    "resnet18": lambda channels, classes, size: resnet18(channels, classes),
    # He et al.'s CIFAR ResNet-20 (3 stages x 3 blocks, widths 16/32/64)
    "resnet20": lambda channels, classes, size: resnet20(channels, classes),
}
