"""Gymnasium environments with image observations, seen as a camera and driven as a robot.

`ImageTask` turns any Gymnasium environment into what perception and the agent expect: BGR
uint8 frames, and an action space the agent can act in (a discrete choice, or components in
[-1, 1] scaled to the environment's box). MiniGrid environments get their RGB image wrappers
(the agent's egocentric view), ALE ones come with their ROMs; an environment without image
observations is rendered with render_mode='rgb_array'.
"""
import cv2
import numpy as np

MINIGRID_TILE = 8
"""Pixels per MiniGrid cell in the partial view (7x7 cells: 56x56 frames)."""


def make_env(env_id: str, seed: int):
    """gymnasium.make(env_id) with image observations; ValueError when it cannot give any."""
    import gymnasium as gym
    if env_id.startswith(('MiniGrid', 'BabyAI')):
        import minigrid  # noqa: F401 -- registers the environments
        from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
        env = ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(env_id), tile_size=MINIGRID_TILE))
    elif env_id.startswith('ALE/'):
        import ale_py
        gym.register_envs(ale_py)
        env = gym.make(env_id)
    elif env_id.startswith('perception_rl/'):
        import perception_rl.visual_tasks  # noqa: F401 -- registers the project's own tasks
        env = gym.make(env_id)
    else:
        env = gym.make(env_id)
        if not _is_image_space(env.observation_space):
            env.close()
            env = gym.make(env_id, render_mode='rgb_array')
    env.action_space.seed(seed)
    return env


def _is_image_space(space) -> bool:
    shape = getattr(space, 'shape', None)
    return (shape is not None and len(shape) == 3 and shape[2] in (1, 3)
            and space.dtype == np.uint8)


def _known_ids() -> str:
    import gymnasium as gym
    ids = sorted(gym.registry)
    return f"{len(ids)} registered, e.g. {', '.join(ids[:8])}"


class ImageTask:
    """One Gymnasium environment: frames out, agent actions in."""

    def __init__(self, env_id: str, seed: int):
        from gymnasium import error, spaces
        try:
            self.env = make_env(env_id, seed)
        except (error.NameNotFound, error.NamespaceNotFound, error.VersionNotFound) as err:
            raise ValueError(f'unknown environment {env_id!r}: {err} ({_known_ids()})') from None
        self.env_id, self._seed = env_id, seed
        self._renders = not _is_image_space(self.env.observation_space)
        space = self.env.action_space
        if isinstance(space, spaces.Discrete):
            self.discrete, self.action_dim = True, int(space.n)
        elif isinstance(space, spaces.Box) and len(space.shape) == 1:
            self.discrete, self.action_dim = False, int(space.shape[0])
            self._low, self._high = space.low.astype(np.float64), space.high.astype(np.float64)
        else:
            self.env.close()
            raise ValueError(f'{env_id}: action space {space} is neither Discrete nor a '
                             f'1-D Box')
        self._resets = 0

    def reset(self) -> np.ndarray:
        """Start an episode (seeded from the task's seed); its first frame."""
        observation, _ = self.env.reset(seed=self._seed + self._resets)
        self._resets += 1
        return self._frame(observation)

    def step(self, agent_action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """(frame, reward, terminated, truncated) after the agent's raw action."""
        observation, reward, terminated, truncated, _ = self.env.step(
            self.env_action(agent_action))
        return self._frame(observation), float(reward), bool(terminated), bool(truncated)

    def env_action(self, agent_action: np.ndarray):
        """The agent's raw action as the environment takes it: the index of a discrete
        action, or the components clipped to [-1, 1] and scaled to the box."""
        if self.discrete:
            return int(agent_action[0])
        unit = np.clip(np.nan_to_num(np.asarray(agent_action, np.float64)), -1.0, 1.0)
        return (self._low + (unit + 1.0) / 2.0 * (self._high - self._low)).astype(np.float32)

    def action_vector(self, agent_action: np.ndarray) -> np.ndarray:
        """The action as perception conditions on it: one-hot, or the clipped components."""
        if self.discrete:
            vector = np.zeros(self.action_dim, np.float32)
            vector[int(agent_action[0])] = 1.0
            return vector
        return np.clip(np.nan_to_num(np.asarray(agent_action, np.float32)), -1.0, 1.0)

    def _frame(self, observation) -> np.ndarray:
        image = self.env.render() if self._renders else observation
        image = np.asarray(image, np.uint8)
        if image.shape[2] == 1:
            return np.ascontiguousarray(np.repeat(image, 3, axis=2))
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # perception takes bgr8, as from a camera

    def close(self) -> None:
        self.env.close()
