"""The project's own Gymnasium tasks, registered as perception_rl/<name>.

perception_rl/Pan-v0: a continuous task. The camera looks at a looping textured scene with a
few moving discs; the action (one component in [-1, 1]) pans it by up to 12 pixels a frame.
The reward is 1 minus the target disc's horizontal distance from the frame's centre (as a
fraction of half the frame): keep the red disc in the middle. Episodes last 200 steps.

perception_rl/Foveation-v1: where to look matters. A small patch of fine stripes sits inside a
red frame that stays put for the whole episode: in the middle of the view in a third of the
episodes, in one of the four quadrants in the others. At every step the stripes are drawn
afresh, running vertically or horizontally, and the agent says which (action 0: vertical, 1:
horizontal) for the frame it sees now. A correct answer earns +0.1, a wrong one -0.1; an
episode lasts 10 steps. The peripheral view (the frame downsampled 4x) shows the red frame but
averages the stripes to plain grey; only a fovea on the patch resolves them. The fovea the
agent chooses at one step is where it looks at the next. A fixed central fovea reads the
middle third and guesses the rest (expected return 1/3); one that moves to the red frame after
the first look reads every episode (return up to 1/3 x 1.0 + 2/3 x 0.9 = 0.93: in a
quadrant episode the first answer, from the centre, is a guess).

perception_rl/FoveationOffCentre-v1 is the same task with the patch only ever in a quadrant,
never where a central fovea looks: a fixed fovea can only guess (expected return 0).

The middle placements are what make the task learnable from its reward alone: the actor
learns to read stripes from them with the fovea where it starts, and only then does moving the
fovea pay. With the patch always in a quadrant, a fovea placed at random lands on it in about
4 % of the steps, and neither the reading nor the looking was learned in 100k steps (one seed
each, patch sides 16 and 32). A focus rewarded by fovea detail (`--focus detail`) does not
wait for the actor, and learns the off-centre task (docs/learning_benchmark.md).

Version 0 of this task asked for one answer per episode, after any number of "wait" steps. The
agent never learned it: waiting pays only once the actor can read the stripes, and the actor
learns to read them only from episodes where it waited and looked (docs/learning_benchmark.md).
"""
import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from perception_rl.synthetic_scene import SceneSpec, SyntheticScene

WIDTH, HEIGHT = 256, 192
PATCH = 16
"""Side of the striped patch; its stripes are 2 pixels wide."""
BORDER = 4
"""Width of the red frame around the patch."""
QUADRANTS = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
PLACES = ((0.5, 0.5), (0.5, 0.5), *QUADRANTS)
"""Patch centres as fractions of the frame, drawn uniformly (the middle twice as often as
each quadrant); each is jittered by up to JITTER pixels."""
JITTER = 8
DISTRACTORS = 6
"""Green and blue squares scattered over the frame, the size of the red frame."""
REWARD = 0.1
"""For a correct answer (minus this for a wrong one); an episode's return lies in [-1, 1]."""
EPISODE_STEPS = 10


class FoveationTask(gym.Env):
    """Read, every step, a detail only the fovea can resolve: vertical or horizontal stripes?"""

    metadata = {'render_modes': []}

    def __init__(self, places: tuple[tuple[float, float], ...] = PLACES):
        self.places = places
        self.observation_space = spaces.Box(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
        self.action_space = spaces.Discrete(2)
        self._frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        self._patch = (0, 0)
        """Top-left corner of the striped patch, for this episode."""
        self.vertical = True
        """The answer for the frame last returned: whether its stripes run vertically."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        rng = self.np_random
        frame = rng.integers(80, 176, (HEIGHT // 8, WIDTH // 8, 1), dtype=np.uint8)
        frame = np.repeat(np.repeat(np.repeat(frame, 8, 0), 8, 1), 3, 2)  # coarse grey clutter
        outer = PATCH + 2 * BORDER
        for colour in rng.permutation([(0, 160, 0), (0, 0, 200)] * (DISTRACTORS // 2)):
            x, y = rng.integers(0, WIDTH - outer), rng.integers(0, HEIGHT - outer)
            frame[y:y + outer, x:x + outer] = colour
        fx, fy = self.places[rng.integers(len(self.places))]
        # Corners on multiples of 4, so the 4x downsampled periphery averages the 2-pixel
        # stripes to exactly the same grey whichever way they run.
        x = int(fx * WIDTH + rng.integers(-JITTER, JITTER + 1) - outer // 2) // 4 * 4
        y = int(fy * HEIGHT + rng.integers(-JITTER, JITTER + 1) - outer // 2) // 4 * 4
        frame[y:y + outer, x:x + outer] = (220, 30, 30)
        self._frame, self._patch = frame, (x + BORDER, y + BORDER)
        return self._draw_stripes(), {}

    def step(self, action):
        correct = (int(action) == 0) == self.vertical
        return self._draw_stripes(), REWARD if correct else -REWARD, False, False, {}

    def _draw_stripes(self) -> np.ndarray:
        """A copy of the frame with freshly drawn stripes; sets `vertical` to their answer."""
        self.vertical = bool(self.np_random.integers(2))
        stripes = (np.arange(PATCH) // 2 % 2 * 255).astype(np.uint8)
        patch = np.tile(stripes, (PATCH, 1)) if self.vertical else \
            np.tile(stripes[:, None], (1, PATCH))
        frame = self._frame.copy()
        x, y = self._patch
        frame[y:y + PATCH, x:x + PATCH] = patch[..., None]
        return frame


PAN_SIZE = (160, 120)
PAN_SPEED = 12.0
"""Pixels per frame the scene pans for the action 1.0."""


class PanTask(gym.Env):
    """Keep the red disc in the middle of the frame by panning the camera."""

    metadata = {'render_modes': []}

    def __init__(self):
        width, height = PAN_SIZE
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._scene: SyntheticScene | None = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        width, height = PAN_SIZE
        self._scene = SyntheticScene(width, height, SceneSpec('blobs', 3, 'disc', 'wander', 2.0),
                                     pan_speed=0.0, seed=int(self.np_random.integers(2**31)))
        return self._render(self._scene.step(0.0)), {}

    def step(self, action):
        pan = float(np.clip(np.nan_to_num(np.asarray(action, np.float64)).ravel()[0], -1, 1))
        frame = self._render(self._scene.step(PAN_SPEED * pan))
        return frame, self._reward(), False, False, {}

    def _target_x(self) -> float:
        return float(self._scene.state()[2])  # the first object's x, a fraction of the width

    def _reward(self) -> float:
        return 1.0 - abs(2.0 * self._target_x() - 1.0)

    def _render(self, frame: np.ndarray) -> np.ndarray:
        """The scene's BGR frame as RGB, with the target disc marked red."""
        x, y = self._scene.state()[2:4] * PAN_SIZE
        frame = frame.copy()
        cv2.circle(frame, (int(x), int(y)), 6, (30, 30, 220), -1)  # BGR red
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


gym.register(id='perception_rl/Foveation-v1', entry_point=FoveationTask,
             max_episode_steps=EPISODE_STEPS)
gym.register(id='perception_rl/FoveationOffCentre-v1', entry_point=FoveationTask,
             kwargs={'places': QUADRANTS}, max_episode_steps=EPISODE_STEPS)
gym.register(id='perception_rl/Pan-v0', entry_point=PanTask, max_episode_steps=200)
