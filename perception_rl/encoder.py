"""VisualPerception: a foveated and a peripheral CNN stream fused into one feature vector."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from perception_rl.foveation import Roi, crop_fovea, downsample_periphery


@dataclass
class EncoderConfig:
    """Shape of the two-stream encoder."""

    fovea_size: int = 48
    """Side in pixels of the square fovea crop given to the fovea stream."""
    periphery_width: int = 64
    """Width in pixels of the downsampled whole frame given to the periphery stream."""
    periphery_height: int = 48
    """Height in pixels of the downsampled whole frame."""
    channels: int = 32
    """Channels of the last convolution in each stream."""
    stream_dim: int = 128
    """Width of each stream's output before fusion."""
    feature_dim: int = 64
    """Size of the fused feature vector that perception publishes."""
    fovea_stream: str = 'spatial'
    """How the fovea stream summarises its last feature maps. 'spatial': flattened, so where
    in the fovea something lies is kept. 'pooled': each channel's maximum over positions (of
    the second and third convolutions) and mean (of the third), so a detail reads the same
    anywhere in the fovea; the periphery still says where things are."""
    anchored: bool = True
    """Features are the layer-normalised difference between the fused vector of the views
    and that of an anchor: the first views this encoder saw, kept with its weights. Without
    it most of the fused vector is the same for every frame of a scene, so the features'
    content was 0.3 % of their scale after 6000 frames of online training and whatever moved
    that common part drowned it; with it the content is the features' whole scale, and the
    common part cancels however the weights move (docs/representation_benchmark.md,
    "Anchored features"). The anchor's own features are zero."""


FOVEA_STREAMS = ('spatial', 'pooled')


def _conv_stream(channels: int) -> nn.Sequential:
    """Three stride-2 convolutions: each halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, channels, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )


def _flat_size(height: int, width: int, channels: int) -> int:
    for _ in range(3):
        height, width = (height + 1) // 2, (width + 1) // 2
    return channels * height * width


class _PooledStream(nn.Module):
    """A conv stream summarised over positions: a detail anywhere in the view gives the same
    summary. On the foveation task's stripes 4 to 16 px off the fovea's centre, a linear probe
    of the random encoder's features read their orientation 0.93-0.98 right, against
    0.63-0.80 for the flattened stream (scripts/foveal_reading_probe.py)."""

    def __init__(self, channels: int, out_dim: int):
        super().__init__()
        stream = _conv_stream(channels)
        self.lower, self.upper = stream[:4], stream[4:6]
        self.linear = nn.Linear(3 * channels, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        middle = self.lower(images)
        top = self.upper(middle)
        summary = torch.cat([middle.amax((2, 3)), top.amax((2, 3)), top.mean((2, 3))], dim=1)
        return torch.relu(self.linear(summary))


class VisualPerception(nn.Module):
    """Fovea stream + periphery stream -> fused, anchored, layer-normalised features.

    The final LayerNorm (without affine parameters) fixes the scale of the features, so no
    auxiliary loss can shrink them towards zero, and the agent sees inputs of unit scale
    however perception drifts.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config
        if c.fovea_stream not in FOVEA_STREAMS:
            raise ValueError(f"fovea_stream must be one of {', '.join(FOVEA_STREAMS)}, not "
                             f'{c.fovea_stream!r}')
        self.fovea = _PooledStream(c.channels, c.stream_dim) if c.fovea_stream == 'pooled' \
            else nn.Sequential(
                _conv_stream(c.channels),
                nn.Linear(_flat_size(c.fovea_size, c.fovea_size, c.channels), c.stream_dim),
                nn.ReLU())
        self.periphery = nn.Sequential(
            _conv_stream(c.channels),
            nn.Linear(_flat_size(c.periphery_height, c.periphery_width, c.channels),
                      c.stream_dim),
            nn.ReLU())
        self.fuse = nn.Linear(2 * c.stream_dim, c.feature_dim)
        self.norm = nn.LayerNorm(c.feature_dim, elementwise_affine=False)
        if c.anchored:
            self.register_buffer('anchor_fovea', torch.zeros(1, 3, c.fovea_size, c.fovea_size))
            self.register_buffer('anchor_periphery',
                                 torch.zeros(1, 3, c.periphery_height, c.periphery_width))
            self.register_buffer('anchor_set', torch.tensor(False))

    def forward(self, fovea: torch.Tensor, periphery: torch.Tensor) -> torch.Tensor:
        """Features [B, feature_dim] from float images [B, 3, H, W] in [0, 1]; the first
        views an anchored encoder is given become its anchor."""
        if not self.config.anchored:
            return self.norm(self._fused(fovea, periphery))
        if not self.anchor_set:
            self.anchor_fovea.copy_(fovea[:1])
            self.anchor_periphery.copy_(periphery[:1])
            self.anchor_set.fill_(True)
        fused = self._fused(torch.cat([fovea, self.anchor_fovea]),
                            torch.cat([periphery, self.anchor_periphery]))
        return self.norm(fused[:-1] - fused[-1:])

    def _fused(self, fovea: torch.Tensor, periphery: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.fovea(fovea), self.periphery(periphery)], dim=1))

    def freeze_conv_layers(self, count: int) -> None:
        """Keep the bottom `count` convolutions of both streams at their current weights."""
        for stream in (self.fovea, self.periphery):
            convolutions = [m for m in stream.modules() if isinstance(m, nn.Conv2d)]
            for conv in convolutions[:count]:
                conv.requires_grad_(False)

    def views(self, frame: np.ndarray, roi: Roi, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fovea and periphery tensors [1, 3, H, W] of one HxWx3 uint8 frame."""
        c = self.config
        fovea = crop_fovea(frame, roi, c.fovea_size)
        periphery = downsample_periphery(frame, c.periphery_width, c.periphery_height)
        return images_to_tensor(fovea[None], device), images_to_tensor(periphery[None], device)


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]; the division runs on the small crops."""
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return tensor.to(device, non_blocking=True).float().div_(255.0)
