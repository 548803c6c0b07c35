"""Built-in moving scenes whose state is known: the camera-free default and the benchmark.

A textured background pans sideways (by the scene's own speed or by the action), objects move
over it, optional distractors jump about and an optional "noisy TV" patch flickers with fresh
noise every frame. Only the objects are the state; background, distractors and noise are what
a representation should see through. Rendering a 640x480 frame costs well under a millisecond.
"""
from dataclasses import dataclass

import cv2
import numpy as np

TEXTURES = ('blobs', 'stripes', 'checker', 'speckle', 'plaid')
MOTIONS = ('bounce', 'orbit', 'wander')
SHAPES = ('disc', 'square')


@dataclass(frozen=True)
class SceneSpec:
    """What a scene looks like and how it moves."""

    texture: str = 'blobs'
    """Background: smooth colour blobs, stripes, a checkerboard, fine speckle or plaid (two
    crossed gratings in three colours)."""
    objects: int = 4
    """How many objects move over the background (the state)."""
    shape: str = 'disc'
    motion: str = 'bounce'
    """bounce: straight lines off the edges; orbit: circles; wander: momentum random walk."""
    speed: float = 6.0
    """Largest object speed in pixels per frame."""
    distractors: int = 0
    """Small grey squares that jump to a random place every few frames (not state)."""
    noisy_tv: bool = False
    """A fixed patch of fresh uniform noise every frame (unpredictable, not state)."""


SCENE_FAMILIES = {
    'blobs-bounce': SceneSpec('blobs', 4, 'disc', 'bounce', 6.0, 2, True),
    'stripes-orbit': SceneSpec('stripes', 3, 'square', 'orbit', 5.0, 0, True),
    'checker-wander': SceneSpec('checker', 6, 'disc', 'wander', 4.0, 4, False),
    'speckle-bounce': SceneSpec('speckle', 2, 'square', 'bounce', 8.0, 3, True),
}
"""The benchmark's scene families. The defaults were tuned on blobs-bounce only."""
UNSEEN_FAMILIES = {
    'plaid-wander': SceneSpec('plaid', 5, 'square', 'wander', 5.0, 2, True),
    'speckle-orbit': SceneSpec('speckle', 4, 'disc', 'orbit', 4.0, 1, False),
}
"""Families added after the default loss was chosen and never used to choose anything: the
check that it holds on other textures, object counts and motions
(docs/representation_benchmark.md, "Through perception_node")."""
ALL_FAMILIES = {**SCENE_FAMILIES, **UNSEEN_FAMILIES}


def _texture(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    if kind == 'blobs':
        coarse = rng.integers(0, 256, (max(height // 32, 2), max(width // 16, 2), 3), np.uint8)
        return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    if kind == 'speckle':
        fine = rng.integers(0, 256, (max(height // 4, 2), max(width // 4, 2), 3), np.uint8)
        return cv2.resize(fine, (width, height), interpolation=cv2.INTER_NEAREST)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colours = rng.integers(0, 256, (2, 3)).astype(np.float32)
    if kind == 'stripes':
        angle, period = rng.uniform(0, np.pi), rng.uniform(24, 64)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
    elif kind == 'checker':
        cell = int(rng.integers(24, 56))
        wave = ((x // cell + y // cell) % 2).astype(np.float32)
    elif kind == 'plaid':
        angles, periods = rng.uniform(0, np.pi, 2), rng.uniform(16, 48, 2)
        a, b = (0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(t) + y * np.sin(t)) / period)
                for t, period in zip(angles, periods))
        third = rng.integers(0, 256, 3).astype(np.float32)
        first = colours[0] + a[..., None] * (colours[1] - colours[0])
        image = (1 - 0.5 * b[..., None]) * first + 0.5 * b[..., None] * third
        return image.astype(np.uint8)
    else:
        raise ValueError(f'texture must be one of {TEXTURES}, not {kind!r}')
    image = colours[0] + wave[..., None] * (colours[1] - colours[0])
    return image.astype(np.uint8)


class SyntheticScene:
    """One scene of a SceneSpec, stepped a frame at a time."""

    def __init__(self, width: int = 640, height: int = 480, spec: SceneSpec = SceneSpec(),
                 pan_speed: float = 2.0, seed: int = 0):
        if spec.motion not in MOTIONS or spec.shape not in SHAPES:
            raise ValueError(f'motion must be one of {MOTIONS} and shape one of {SHAPES}')
        self.width, self.height, self.spec = width, height, spec
        self.pan_speed = pan_speed
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        loop = _texture(spec.texture, 2 * width, height, rng)
        self._loop_width = loop.shape[1]
        # The first frame's width appended again, so every pan offset is one slice.
        self._background = np.concatenate([loop, loop[:, :width]], axis=1)
        n = spec.objects
        self._radius = rng.integers(max(height // 12, 3), max(height // 6, 4), n)
        self._colour = rng.integers(0, 256, (n, 3))
        self.scatter()
        self._distractors = rng.uniform([0, 0], [width, height], (spec.distractors, 2))
        self._tv = (int(0.1 * width), int(0.65 * height), int(0.15 * width), int(0.2 * height))

    def scatter(self) -> None:
        """A cut to a new shot: the camera looks somewhere else and every object is somewhere
        new with a new velocity."""
        rng, n, speed = self._rng, self.spec.objects, self.spec.speed
        width, height = self.width, self.height
        self._pan = float(rng.uniform(0, self._loop_width))
        self._position = rng.uniform([0, 0], [width, height], (n, 2))
        self._velocity = rng.uniform(-speed, speed, (n, 2))
        self._orbit_centre = rng.uniform([0.25 * width, 0.25 * height],
                                         [0.75 * width, 0.75 * height], (n, 2))
        self._orbit_radius = rng.uniform(0.1, 0.25, n) * min(width, height)
        self._orbit_phase = rng.uniform(0, 2 * np.pi, n)
        self._orbit_rate = rng.choice([-1, 1], n) * speed / self._orbit_radius

    def step(self, pan_velocity: float | None = None) -> np.ndarray:
        """Advance one frame and render it (HxWx3 uint8 BGR).

        :param pan_velocity: pixels per frame to pan; None keeps the scene's own speed.
        """
        pan = self.pan_speed if pan_velocity is None else float(pan_velocity)
        self._pan = (self._pan + pan) % self._loop_width
        self._move_objects(pan)
        rng = self._rng
        if len(self._distractors) and rng.random() < 0.2:
            self._distractors[rng.integers(len(self._distractors))] = rng.uniform(
                [0, 0], [self.width, self.height])
        start = int(self._pan)
        frame = self._background[:, start:start + self.width].copy()
        for (x, y), r, colour in zip(self._position, self._radius, self._colour):
            colour = tuple(int(c) for c in colour)
            if self.spec.shape == 'disc':
                cv2.circle(frame, (int(x), int(y)), int(r), colour, -1)
            else:
                cv2.rectangle(frame, (int(x - r), int(y - r)), (int(x + r), int(y + r)),
                              colour, -1)
        side = max(self.height // 40, 2)
        for x, y in self._distractors:
            cv2.rectangle(frame, (int(x), int(y)), (int(x) + side, int(y) + side),
                          (128, 128, 128), -1)
        if self.spec.noisy_tv:
            x, y, w, h = self._tv
            frame[y:y + h, x:x + w] = rng.integers(0, 256, (h, w, 3), np.uint8)
        return frame

    def _move_objects(self, pan: float) -> None:
        spec = self.spec
        if spec.motion == 'orbit':
            self._orbit_phase += self._orbit_rate
            self._orbit_centre[:, 0] -= pan  # the world moves against the pan
            self._orbit_centre[:, 0] %= self.width
            offset = np.stack([np.cos(self._orbit_phase), np.sin(self._orbit_phase)], axis=1)
            self._position = np.clip(self._orbit_centre + self._orbit_radius[:, None] * offset,
                                     0, [self.width, self.height])
            return
        if spec.motion == 'wander':
            self._velocity = 0.9 * self._velocity + self._rng.normal(
                0, 0.3 * spec.speed, self._velocity.shape)
            self._velocity = np.clip(self._velocity, -spec.speed, spec.speed)
        self._position += self._velocity
        self._position[:, 0] -= pan
        for axis, limit in ((0, self.width), (1, self.height)):
            out = (self._position[:, axis] < 0) | (self._position[:, axis] > limit)
            self._velocity[out, axis] *= -1.0
            self._position[:, axis] = np.clip(self._position[:, axis], 0, limit)

    def state(self) -> np.ndarray:
        """The true state: where the camera looks (sine and cosine of the pan's phase around
        the looping background), then each object's x and y as fractions of the frame."""
        phase = 2.0 * np.pi * self._pan / self._loop_width
        objects = self._position / [self.width, self.height]
        return np.concatenate([[np.sin(phase), np.cos(phase)], objects.ravel()])
