"""Where frames come from: the synthetic scene, a camera device or a video file."""
import glob
import os
from dataclasses import dataclass

import cv2
import numpy as np

from perception_rl.synthetic_scene import SyntheticScene


class SourceError(RuntimeError):
    """A frame source that cannot be opened or read; the message says what was tried."""


def video_devices() -> list[str]:
    """The V4L2 capture devices present on this machine, by path."""
    return sorted(glob.glob('/dev/video*')) + sorted(glob.glob('/dev/v4l/by-id/*'))


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `source` parameter."""

    kind: str    # 'synthetic', 'device' or 'file'
    target: str | int

    @staticmethod
    def parse(source: str) -> 'SourceSpec':
        """'synthetic', a device index ('0'), a device path ('/dev/...') or a video file path."""
        text = str(source).strip()
        if text == 'synthetic':
            return SourceSpec('synthetic', text)
        if text.isdigit():
            return SourceSpec('device', int(text))
        if text.startswith('/dev/'):
            return SourceSpec('device', text)
        if not text:
            raise SourceError("source is empty: give 'synthetic', a device index, "
                              'a device path or a video file')
        return SourceSpec('file', text)


class FrameSource:
    """Frames of a fixed size from one source; `read` returns None when none is available."""

    def __init__(self, spec: SourceSpec, width: int, height: int, framerate: float,
                 loop: bool = True, seed: int = 0):
        self.spec, self.width, self.height, self.loop = spec, width, height, loop
        self.ended = False
        self._scene: SyntheticScene | None = None
        self._capture: cv2.VideoCapture | None = None
        if spec.kind == 'synthetic':
            self._scene = SyntheticScene(width, height, seed=seed)
            return
        if spec.kind == 'file' and not os.path.isfile(spec.target):
            raise SourceError(f'video file {spec.target!r} does not exist')
        capture = cv2.VideoCapture(spec.target)
        if not capture.isOpened():
            capture.release()
            if spec.kind == 'device':
                found = ', '.join(video_devices()) or 'none'
                raise SourceError(f'cannot open camera {spec.target!r}; '
                                  f'video devices on this machine: {found}')
            raise SourceError(f'cannot decode video file {spec.target!r}')
        if spec.kind == 'device':
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            capture.set(cv2.CAP_PROP_FPS, framerate)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        self._capture = capture

    def read(self) -> np.ndarray | None:
        """The next HxWx3 uint8 BGR frame at the configured size, or None.

        None from a file means it ended (and `loop` is off: `ended` is set); from a device it
        means the read failed.
        """
        if self._scene is not None:
            return self._scene.step()
        if self._capture is None or self.ended:
            return None
        ok, frame = self._capture.read()
        if not ok and self.spec.kind == 'file':
            if not self.loop:
                self.ended = True
                return None
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        if not ok or frame is None or frame.size == 0:
            return None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if frame.shape[1] != self.width or frame.shape[0] != self.height:
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
