"""Where frames come from: the synthetic scene, a camera device, a network stream or a video
file; and a grabber that reads one on a thread of its own, so that a hung camera cannot hang
its caller."""
import glob
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from perception_rl.synthetic_scene import SyntheticScene

# OpenCV and FFmpeg print a warning of their own for every failed open or read; camera_node
# reports a failing source itself, once per outage. (FFmpeg reads its variable when first used.)
os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class SourceError(RuntimeError):
    """A frame source that cannot be opened or read; the message says what was tried."""


def video_devices() -> list[str]:
    """The V4L2 capture devices present on this machine, by path."""
    return sorted(glob.glob('/dev/video*')) + sorted(glob.glob('/dev/v4l/by-id/*'))


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `source` parameter."""

    kind: str    # 'synthetic', 'device', 'stream' or 'file'
    target: str | int

    @property
    def live(self) -> bool:
        """Whether frames come from a camera as it sees the world (a device or a stream)."""
        return self.kind in ('device', 'stream')

    @staticmethod
    def parse(source: str) -> 'SourceSpec':
        """'synthetic', a device index ('0'), a device path ('/dev/...'), a stream URL
        ('http://camera/video.mjpg', 'rtsp://...') or a video file path."""
        text = str(source).strip()
        if text == 'synthetic':
            return SourceSpec('synthetic', text)
        if text.isdigit():
            return SourceSpec('device', int(text))
        if text.startswith('/dev/'):
            return SourceSpec('device', text)
        if '://' in text:
            return SourceSpec('stream', text)
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
        capture = (cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG) if spec.kind == 'stream'
                   else cv2.VideoCapture(spec.target))
        if not capture.isOpened():
            capture.release()
            if spec.kind == 'device':
                found = ', '.join(video_devices()) or 'none'
                raise SourceError(f'cannot open camera {spec.target!r}; '
                                  f'video devices on this machine: {found}')
            if spec.kind == 'stream':
                raise SourceError(f'cannot open stream {spec.target!r} (no answer, or not a '
                                  'video stream)')
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
        try:
            ok, frame = self._capture.read()
        except cv2.error:  # a decoder's complaint about one broken frame
            return None
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


class FrameGrabber:
    """Opens a frame source and reads it, one frame per `request()`, on a thread of its own.

    An open or a read that never returns (a wedged driver, a network camera that stopped
    sending) blocks only that thread: the caller sees `busy_for()` grow and abandons the
    grabber with `close()`; the thread ends once the call returns, if ever.
    """

    def __init__(self, open_source: Callable[[], FrameSource]):
        self._open_source = open_source
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self.source: FrameSource | None = None
        """The source once opened (None while opening, or when opening failed)."""
        self.error: SourceError | None = None
        """Why opening failed, once it has."""
        self._busy_since: float | None = time.monotonic()
        self._result: tuple[bool, np.ndarray | None] = (False, None)
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name='frame-grabber', daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Read the next frame (after opening, when still opening)."""
        self._wanted.set()

    def take(self, timeout: float = 0.0) -> tuple[bool, np.ndarray | None]:
        """(whether a requested read has finished since the last take, its frame or None),
        waiting up to `timeout` seconds for one to finish."""
        if timeout > 0.0:
            self._finished.wait(timeout)
        with self._lock:
            result, self._result = self._result, (False, None)
            self._finished.clear()
        return result

    def busy_for(self) -> float:
        """Seconds the current open or read has taken so far (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self, timeout: float = 0.0) -> None:
        """Stop; the source is released by the thread once its current call returns.

        :param timeout: seconds to wait for that (a process must not exit while the thread is
            inside OpenCV: its C++ teardown would abort).
        """
        self._closed = True
        self._wanted.set()
        if timeout > 0.0:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.source = self._open_source()
        except SourceError as error:
            self.error = error
            return
        finally:
            self._busy_since = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closed:
                    return
                self._busy_since = time.monotonic()
                frame = self.source.read()
                with self._lock:
                    self._result = (True, frame)
                    self._busy_since = None
                    self._finished.set()
        finally:
            self.source.close()
