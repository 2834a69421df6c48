"""Φ_Task: task model factories (ResNet18, U-Net++, and CPU-sized networks for quick runs).

Every factory takes ``num_classes`` (classes, or 1 for binary segmentation) and ``in_channels``
(3 for views, more for packed raw) and returns an ``nn.Module`` mapping (B, C, H, W) images to
logits: (B, num_classes) for classification, (B, 1, H, W) for segmentation. Pretrained weights
are optional: a local file (``weights_path``), or the library's download where the user has
internet (``pretrained=true``); nothing is downloaded otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from raw2logit.errors import InputError


def _load_state(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"task_model.weights_path={path} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A first convolution for ``in_channels`` inputs, initialised from the RGB one's mean filter."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
    return new


def resnet18(
    num_classes: int, in_channels: int = 3, pretrained: bool = False, weights_path: str | None = None
) -> nn.Module:
    """torchvision's ResNet18 with a new ``num_classes`` head (the paper's classifier).

    Args:
        pretrained: start from torchvision's ImageNet weights (downloads them once; needs internet).
        weights_path: a local ResNet18 state dict to start from instead (the head is skipped).
    """
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1 if pretrained and not weights_path else None
    model = torchvision.models.resnet18(weights=weights)
    if weights_path:
        state = {k: v for k, v in _load_state(weights_path).items() if not k.startswith("fc.")}
        model.load_state_dict(state, strict=False)
    if in_channels != 3:
        model.conv1 = _replace_first_conv(model.conv1, in_channels)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def unetpp(
    num_classes: int = 1,
    in_channels: int = 3,
    encoder: str = "resnet34",
    pretrained: bool = False,
    weights_path: str | None = None,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
) -> nn.Module:
    """segmentation-models-pytorch's U-Net++ with a ResNet encoder (the paper's segmenter).

    Args:
        encoder: smp encoder name (``resnet18``, ``resnet34``, ...).
        pretrained: ImageNet encoder weights via smp (downloads them once; needs internet).
        weights_path: a local state dict of the whole model to start from.
    """
    import segmentation_models_pytorch as smp

    model = smp.UnetPlusPlus(
        encoder_name=encoder,
        encoder_weights="imagenet" if pretrained and not weights_path else None,
        in_channels=in_channels,
        classes=num_classes,
        decoder_channels=tuple(decoder_channels),
    )
    if weights_path:
        model.load_state_dict(_load_state(weights_path))
    return model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A four-stage convolutional classifier for CPU-sized runs (about 0.1 M parameters at width 16)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        layers, cin = [], in_channels
        for cout in widths:
            layers += [_block(cin, cout), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 16:  # four 2x2 poolings
            raise InputError(f"SmallCNN needs images of at least 16x16 pixels; got {tuple(x.shape[-2:])} (a larger "
                             "dataset.size, or a data model that keeps the full resolution).")  # fmt: skip
        return self.head(self.features(x).mean(dim=(-2, -1)))


class SmallUNet(nn.Module):
    """A three-level U-Net for CPU-sized segmentation runs; input sides must be divisible by 4."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.down1, self.down2 = _block(in_channels, width), _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = _block(2 * width, width)
        self.out = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise InputError(f"SmallUNet needs height and width divisible by 4; got {tuple(x.shape[-2:])}.")
        d1 = self.down1(x)
        d2 = self.down2(nn.functional.max_pool2d(d1, 2))
        b = self.bottom(nn.functional.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat((self.up2(b), d2), dim=1))
        u1 = self.dec1(torch.cat((self.up1(u2), d1), dim=1))
        return self.out(u1)


def small(
    num_classes: int, in_channels: int = 3, task: str = "classification", width: int | None = None
) -> nn.Module:
    """The CPU-sized task model for the dataset's task: ``SmallCNN`` (width 8) for classification,
    ``SmallUNet`` (width 8) for segmentation (``task_model=small``, the default)."""
    if task == "classification":
        return SmallCNN(num_classes, in_channels, width or 8)
    return SmallUNet(num_classes, in_channels, width or 8)


def paper(num_classes: int, in_channels: int = 3, task: str = "classification", pretrained: bool = False,
          weights_path: str | None = None, encoder: str = "resnet34") -> nn.Module:  # fmt: skip
    """The paper's task model for the dataset's task: ResNet18 for classification, U-Net++ with a ResNet
    encoder for segmentation (``task_model=paper``); weights as for ``resnet18`` and ``unetpp``."""
    if task == "classification":
        return resnet18(num_classes, in_channels, pretrained, weights_path)
    return unetpp(num_classes, in_channels, encoder, pretrained, weights_path)


# The builders a config (``task_model._target_``) or a checkpoint may name. A checkpoint's stored
# spec is matched against this dict, never imported or instantiated by name: reading a file must
# not run code it names.
TASK_MODELS = {
    "raw2logit.tasks.models.small": small,
    "raw2logit.tasks.models.paper": paper,
    "raw2logit.tasks.models.SmallCNN": SmallCNN,
    "raw2logit.tasks.models.SmallUNet": SmallUNet,
    "raw2logit.tasks.models.resnet18": resnet18,
    "raw2logit.tasks.models.unetpp": unetpp,
}
