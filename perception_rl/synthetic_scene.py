"""A built-in moving scene, so that everything runs without a camera."""
import cv2
import numpy as np


class SyntheticScene:
    """A textured background panning sideways, with coloured discs bouncing over it.

    Rendering a 640x480 frame costs well under a millisecond: the background is generated
    once, twice as wide as the frame, and each frame is a slice of it.
    """

    def __init__(self, width: int = 640, height: int = 480, objects: int = 4,
                 pan_speed: float = 2.0, seed: int = 0):
        self.width, self.height = width, height
        self.pan_speed = pan_speed
        rng = np.random.default_rng(seed)
        coarse = rng.integers(0, 256, (max(height // 32, 2), max(width // 16, 2), 3), np.uint8)
        loop = cv2.resize(coarse, (2 * width, height), interpolation=cv2.INTER_CUBIC)
        self._loop_width = loop.shape[1]
        # The first frame's width appended again, so every pan offset is one slice.
        self._background = np.concatenate([loop, loop[:, :width]], axis=1)
        self._pan = 0.0
        self._radius = rng.integers(max(height // 24, 3), max(height // 10, 4), objects)
        self._position = rng.uniform([0, 0], [width, height], (objects, 2))
        self._velocity = rng.uniform(-6.0, 6.0, (objects, 2))
        self._colour = rng.integers(0, 256, (objects, 3))

    def step(self, pan_velocity: float | None = None) -> np.ndarray:
        """Advance one frame and render it (HxWx3 uint8 BGR).

        :param pan_velocity: pixels per frame to pan; None keeps the scene's own speed.
        """
        self._pan = (self._pan + (self.pan_speed if pan_velocity is None else pan_velocity)
                     ) % self._loop_width
        self._position += self._velocity
        for axis, limit in ((0, self.width), (1, self.height)):
            out = (self._position[:, axis] < 0) | (self._position[:, axis] > limit)
            self._velocity[out, axis] *= -1.0
            self._position[:, axis] = np.clip(self._position[:, axis], 0, limit)
        start = int(self._pan)
        frame = self._background[:, start:start + self.width].copy()
        for (x, y), r, colour in zip(self._position, self._radius, self._colour):
            cv2.circle(frame, (int(x), int(y)), int(r), tuple(int(c) for c in colour), -1)
        return frame

    def state(self) -> np.ndarray:
        """The true scene state: pan offset, then each object's x and y (pixels)."""
        return np.concatenate([[self._pan], self._position.ravel()])
