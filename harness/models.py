"""UNet for binary segmentation: a plain nn.Module with explicit constructor arguments."""

import torch
from torch import nn

MIN_DEPTH, MAX_DEPTH = 2, 6


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # bias is redundant in front of BatchNorm
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNetEncoder(nn.Module):
    """The contracting path; also the feature extractor of the cat-versus-dog classifier."""

    def __init__(self, depth: int, base_channels: int, in_channels: int = 3):
        super().__init__()
        self.channels = [base_channels * 2**level for level in range(depth)]
        inputs = [in_channels, *self.channels[:-1]]
        self.blocks = nn.ModuleList(conv_block(i, o) for i, o in zip(inputs, self.channels))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps from the finest level to the coarsest (the bottleneck)."""
        features = []
        for level, block in enumerate(self.blocks):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        return features


class UNet(nn.Module):
    """UNet with `depth` resolution levels (depth - 1 poolings); base_channels doubles per level.

    Input: float images in [0, 1], shape (N, 3, H, W) with H and W divisible by 2**(depth - 1).
    Output: foreground logits, shape (N, 1, H, W). depth 3 is the original report's "UNet small",
    depth 4 its "UNet".
    """

    def __init__(self, depth: int = 3, base_channels: int = 16, in_channels: int = 3):
        super().__init__()
        if not MIN_DEPTH <= depth <= MAX_DEPTH:
            raise ValueError(f"UNet depth must be {MIN_DEPTH} to {MAX_DEPTH}, got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be positive, got {base_channels}")
        self.depth = depth
        self.base_channels = base_channels
        self.encoder = UNetEncoder(depth, base_channels, in_channels)
        channels = self.encoder.channels
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2)
            for level in reversed(range(depth - 1))
        )
        self.decoder_blocks = nn.ModuleList(
            conv_block(2 * channels[level], channels[level]) for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        for up, block, skip in zip(self.ups, self.decoder_blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)
