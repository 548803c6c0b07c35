"""The main job: the three nodes in one process, with progress and a run directory."""
import os
import sys
import time
from pathlib import Path

import yaml

from perception_rl.dds_config import profile_environment


def _node_overrides(params_file: str | None, node_name: str, extra: dict) -> list:
    """Parameter overrides for one node: its block of the YAML (and '/**'), then `extra`."""
    from rclpy.parameter import Parameter
    values: dict = {}
    if params_file:
        with open(params_file) as handle:
            blocks = yaml.safe_load(handle) or {}
        for key in ('/**', node_name, f'/{node_name}'):
            values.update((blocks.get(key) or {}).get('ros__parameters', {}))
    values.update(extra)
    return [Parameter(name, value=value) for name, value in values.items()]


def _snapshot(nodes) -> dict:
    """Every parameter of every node, as a ROS parameter YAML."""
    snapshot = {}
    for node in nodes:
        names = node.list_parameters([], 0).names
        snapshot[node.get_name()] = {'ros__parameters': {
            n: node.get_parameter(n).value for n in sorted(names)}}
    return snapshot


class Progress:
    """One line a second (a live line on a terminal): rates, aux loss, reward, updates."""

    def __init__(self, camera, perception, agent):
        self.camera, self.perception, self.agent = camera, perception, agent
        self._last = (time.monotonic(), camera.published, perception.frames, agent.commands)
        self._tty = sys.stdout.isatty()
        self._lines = 0

    def report(self) -> None:
        now = time.monotonic()
        then, frames, features, commands = self._last
        dt = max(now - then, 1e-6)
        self._last = (now, self.camera.published, self.perception.frames, self.agent.commands)
        update = self.agent.agent.last_update
        line = (f'frames {(self.camera.published - frames) / dt:5.1f} Hz  '
                f'features {(self.perception.frames - features) / dt:5.1f} Hz  '
                f'commands {(self.agent.commands - commands) / dt:5.1f} Hz  '
                f'train_steps {self.perception.core.train_steps:6d}  '
                f'aux_loss {self.perception.last_loss:7.4f}  '
                f'reward ext {update.get("extrinsic_reward", 0.0):+.3f} '
                f'int {update.get("intrinsic_reward", 0.0):.3f}  '
                f'updates {self.agent.agent.updates}')
        self._lines += 1
        if self._tty:
            print('\r' + line, end='', flush=True)
        elif self._lines % 5 == 1:
            print(line, flush=True)


def run_job(source: str, duration: float | None, out: str | None,
            params_file: str | None) -> int:
    """Run camera, perception and agent together; returns the exit code."""
    # The main job talks only to itself: keep DDS discovery on this machine unless the
    # user has chosen otherwise.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # Before rclpy starts Fast DDS: frames of 640x480 need the shipped profile's
    # shared-memory segment (the user's own profile, if set, is kept).
    os.environ.update(profile_environment())
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from perception_rl.agent_node import AgentNode
    from perception_rl.camera_node import CameraNode
    from perception_rl.node_main import spin_until_stopped
    from perception_rl.node_params import ParameterError
    from perception_rl.perception_node import PerceptionNode
    from perception_rl.frame_sources import SourceError

    run_dir = Path(out or time.strftime('runs/%Y%m%d-%H%M%S'))
    run_dir.mkdir(parents=True, exist_ok=True)
    learner = {'checkpoint_dir': str(run_dir / 'checkpoints'),
               'log_dir': str(run_dir / 'tensorboard')}
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    nodes = []
    try:
        for node_class, name, extra in ((CameraNode, 'camera_node', {'source': source}),
                                        (PerceptionNode, 'perception_node', learner),
                                        (AgentNode, 'agent_node', learner)):
            nodes.append(node_class(parameter_overrides=_node_overrides(params_file, name,
                                                                        extra)))
    except (ParameterError, SourceError, OSError) as error:
        print(f'perception-rl run: {error}', file=sys.stderr)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        return 2
    with open(run_dir / 'config.yaml', 'w') as handle:
        yaml.safe_dump(_snapshot(nodes), handle, sort_keys=False)
    camera, perception, agent = nodes
    progress = Progress(camera, perception, agent)
    print(f'perception-rl run: source={source}, run directory {run_dir}, '
          f'{"until Ctrl-C" if duration is None else f"{duration:g} s"}', flush=True)
    try:
        spin_until_stopped(nodes, duration, every_second=progress.report)
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    print(f'\nperception-rl run: {perception.frames} frames, '
          f'{perception.core.train_steps} perception train steps, '
          f'{agent.agent.updates} agent updates; config, TensorBoard scalars and checkpoints '
          f'in {run_dir}', flush=True)
    return 0
