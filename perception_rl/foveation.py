"""Where the fovea looks and how the two views are cut from a frame.

All cropping and downsampling happens on the uint8 frame before any float conversion:
converting a 640x480 frame to float first and then resizing costs about 3.5 ms, cropping and
resizing the uint8 frame about 0.05-0.3 ms (ENVIRONMENT.md / issue 5 measurements).
"""
from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_ROI_SIZE = 128
"""Side in pixels of the fovea region until the agent chooses one (a fifth of a 640 frame)."""


@dataclass(frozen=True)
class Roi:
    """A region of interest in pixels of a frame (x, y: top-left corner)."""

    x: int
    y: int
    width: int
    height: int

    @staticmethod
    def centred(frame_width: int, frame_height: int, width: int, height: int) -> 'Roi':
        """The ROI of the given size at the centre of the frame."""
        return Roi.around(0.0, 0.0, frame_width, frame_height, width, height)

    @staticmethod
    def around(cx: float, cy: float, frame_width: int, frame_height: int,
               width: int, height: int) -> 'Roi':
        """The ROI of the given size centred at (cx, cy) in [-1, 1] frame coordinates.

        The centre is clipped so that the whole ROI stays inside the frame.
        """
        width = int(min(max(width, 1), frame_width))
        height = int(min(max(height, 1), frame_height))
        cx = float(np.clip(np.nan_to_num(cx), -1.0, 1.0))
        cy = float(np.clip(np.nan_to_num(cy), -1.0, 1.0))
        x = round((cx + 1.0) / 2.0 * (frame_width - width))
        y = round((cy + 1.0) / 2.0 * (frame_height - height))
        return Roi(int(x), int(y), width, height)

    def clipped_to(self, frame_width: int, frame_height: int) -> 'Roi':
        """This ROI moved and shrunk as little as needed to lie inside the frame."""
        width = int(min(max(self.width, 1), frame_width))
        height = int(min(max(self.height, 1), frame_height))
        x = int(min(max(self.x, 0), frame_width - width))
        y = int(min(max(self.y, 0), frame_height - height))
        return Roi(x, y, width, height)

    def centre(self, frame_width: int, frame_height: int) -> tuple[float, float]:
        """The ROI centre in [-1, 1] frame coordinates (0, 0 at the frame centre).

        The inverse of `around`; an axis the ROI fills entirely is centred (0).
        """
        roi = self.clipped_to(frame_width, frame_height)
        span_x, span_y = frame_width - roi.width, frame_height - roi.height
        return (2.0 * roi.x / span_x - 1.0 if span_x > 0 else 0.0,
                2.0 * roi.y / span_y - 1.0 if span_y > 0 else 0.0)


def crop_fovea(frame: np.ndarray, roi: Roi, size: int) -> np.ndarray:
    """The ROI of a HxWx3 uint8 frame, resized to size x size (uint8)."""
    height, width = frame.shape[:2]
    roi = roi.clipped_to(width, height)
    patch = frame[roi.y:roi.y + roi.height, roi.x:roi.x + roi.width]
    if patch.shape[0] == size and patch.shape[1] == size:
        return np.ascontiguousarray(patch)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def downsample_periphery(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The whole HxWx3 uint8 frame, resized to width x height (uint8).

    A stride first brings large frames near the target size cheaply; INTER_AREA then averages
    the rest so that small moving objects do not alias away.
    """
    stride = max(1, min(frame.shape[1] // (2 * width), frame.shape[0] // (2 * height)))
    if stride > 1:
        frame = frame[::stride, ::stride]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
