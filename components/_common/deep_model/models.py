"""PyTorch model builders: the architectures a vision or tabular config names.

Every image model takes float32 pixels in 0..255, `[N, C, H, W]`, and
normalises inside `forward` (`Pixels`), so TorchScript, ONNX and quantised
exports all share one input contract with the predictor: it decodes an
image and hands over its pixels, nothing else.
"""

from __future__ import annotations

import torch
from torch import nn

from keel.components._common.errors import ConfigError

ARCHITECTURES = ("cnn", "resnet18", "mlp")


class Pixels(nn.Module):
    """Scales 0..255 pixels to zero mean, unit variance per channel, then runs `body`."""

    def __init__(self, body: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.body = body
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)))
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * self.scale - self.shift)


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU x2, max-pool) and a two-layer head: ~93% on Fashion-MNIST."""

    def __init__(self, channels: int, height: int, width: int, n_outputs: int,
                 width_mult: int = 1, dropout: float = 0.25, batch_norm: bool = True):
        super().__init__()
        c1, c2 = 32 * width_mult, 64 * width_mult

        def block(cin, cout):
            norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm), norm(cout), nn.ReLU(inplace=True),
                    nn.Conv2d(cout, cout, 3, padding=1, bias=not batch_norm), norm(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(channels, c1), *block(c1, c2))
        flat = c2 * (height // 4) * (width // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 128), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(128, n_outputs))

    def forward(self, x):
        return self.head(self.features(x))


class MLP(nn.Module):
    """Fully connected layers with ReLU and dropout, for engineered tabular features."""

    def __init__(self, n_features: int, n_outputs: int, hidden: list[int] = (128, 64), dropout: float = 0.1):
        super().__init__()
        layers, width = [], n_features
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = int(size)
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _resnet18(channels: int, n_outputs: int) -> nn.Module:
    # torchvision's ResNet-18 with a CIFAR-style stem: a 7x7 stride-2 conv and a
    # max-pool would shrink a 28x28 or 32x32 image to 7x7 before the first block.
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=n_outputs)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_image_model(architecture: str, shape: tuple[int, int, int], n_outputs: int, params: dict,
                      mean: list[float], std: list[float]) -> nn.Module:
    """An image classifier for `shape` = (height, width, channels) that takes 0..255 pixels NCHW.

    Raises:
        ConfigError: an unknown architecture or parameter (named as model.<field>).
    """
    height, width, channels = shape
    params = dict(params)
    if architecture == "cnn":
        # One parameter check for both frameworks' CNN (it imports no framework).
        from keel.components._common.deep_model.keras_models import check_image_params

        body = SmallCNN(channels, height, width, n_outputs, **check_image_params("cnn", shape, params))
    elif architecture == "resnet18":
        _check_params(params, set())
        body = _resnet18(channels, n_outputs)
    else:
        raise ConfigError(f"model.architecture: {architecture!r} is not an image architecture; use cnn or resnet18")
    return Pixels(body, mean, std)


def build_mlp(n_features: int, n_outputs: int, params: dict) -> nn.Module:
    _check_params(params, {"hidden", "dropout"})
    return MLP(n_features, n_outputs, **params)


def _check_params(params: dict, allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"model.params: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed)) or 'none'}")
