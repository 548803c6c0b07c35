"""sim_env_node: a Gymnasium environment as a ROS 2 robot.

It publishes the environment's frames on `image_raw` (bgr8), and after every environment step
its reward on `reward` and whether the episode ended on `episode_end`; when one ends, the
next frame is the first of a new episode. A continuous environment takes its action from
`cmd_vel` (the `controlled_axes` divided by their `axis_limits`, in [-1, 1], scaled to the
environment's action box); a discrete one takes the index of its action on `action`
(std_msgs/Int32), which agent_node publishes when `discrete_actions` is set.

Two modes:
- realtime: the environment steps at `rate` Hz with the newest command, as a robot keeps
  executing its last command. Until the first command, and while commands are older than
  `command_timeout` (a continuous environment then gets a zero action; a discrete one waits),
  frames are still published.
- lockstep: one environment step per command, for training as fast as the nodes allow. A
  frame whose command does not come within `command_timeout` is published again, so that one
  lost message cannot stall the loop.
"""
import sys
import time

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32, Int32

from perception_rl import qos
from perception_rl.commands import TWIST_AXES, CommandSpec
from perception_rl.gym_tasks import ImageTask
from perception_rl.health import OK, WARN, HealthPublisher
from perception_rl.image_conversion import fill_bgr8
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters
from perception_rl.timing import LatencyWindow

MODES = ('realtime', 'lockstep')
PARAMETERS = [
    ParamSpec('env_id', 'perception_rl/Foveation-v1',
              'Gymnasium id: MiniGrid-*, ALE/*, perception_rl/Foveation-v1 or any environment '
              'with image observations or rgb_array rendering'),
    ParamSpec('mode', 'realtime', 'realtime: step at rate with the newest command; lockstep: '
              'one step per command', choices=MODES),
    ParamSpec('rate', 20.0, 'Environment steps per second in realtime mode', low=0.1,
              high=1000.0),
    ParamSpec('command_timeout', 0.5, 'Seconds after which a command is stale (realtime) or '
              'the frame is published again (lockstep)', low=0.01, high=60.0),
    ParamSpec('controlled_axes', ('linear.x', 'angular.z'),
              'Twist components that make a continuous action, in order', choices=TWIST_AXES),
    ParamSpec('axis_limits', (0.2, 0.5),
              'The command value of each component that means the action 1.0', low=1e-6,
              high=100.0),
    ParamSpec('seed', 0, 'Seed of the environment', low=0, high=2**31 - 1),
    ParamSpec('frame_id', 'sim_camera', 'frame_id of the published image headers'),
]


class SimEnvNode(Node):
    """Frames, rewards and episode ends out; commands in."""

    def __init__(self, **kwargs):
        super().__init__('sim_env_node', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self._p = p
        try:
            self.task = ImageTask(p['env_id'], p['seed'])
        except (ValueError, ImportError) as error:
            raise ParameterError(f"parameter 'env_id': {error}") from None
        try:
            self._command_spec = CommandSpec(tuple(p['controlled_axes']), tuple(p['axis_limits']))
        except ValueError as error:
            self.task.close()
            raise ParameterError(f"parameters 'controlled_axes'/'axis_limits': {error}") from None
        if not self.task.discrete and len(self._command_spec.axes) != self.task.action_dim:
            self.task.close()
            raise ParameterError(
                f"parameter 'controlled_axes': {p['env_id']} takes {self.task.action_dim} "
                f'action components, controlled_axes names {len(self._command_spec.axes)}')
        self._image_pub = self.create_publisher(Image, 'image_raw', qos.IMAGES,
                                                qos_overriding_options=qos.overridable())
        self._reward_pub = self.create_publisher(Float32, 'reward', qos.REWARDS)
        self._end_pub = self.create_publisher(Bool, 'episode_end', qos.REWARDS)
        if self.task.discrete:
            self.create_subscription(Int32, 'action', self._on_action, qos.LATEST)
        else:
            self.create_subscription(Twist, 'cmd_vel', self._on_cmd_vel, qos.LATEST)
        self._command: np.ndarray | None = None
        self._command_time = 0.0
        self._published_time = 0.0
        self.steps = 0
        self.episodes = 0
        self.frames = 0
        self.commands_rejected = 0
        self._step_ms = LatencyWindow()
        self._frame = self.task.reset()
        if p['mode'] == 'realtime':
            self.create_timer(1.0 / p['rate'], self._on_tick)
        else:
            self.create_timer(min(0.05, p['command_timeout'] / 2), self._republish_if_unanswered)
        self._health = HealthPublisher(self, self._report, hardware_id=p['env_id'])
        self._publish_frame()
        kind = (f'discrete, {self.task.action_dim} actions on action' if self.task.discrete
                else f'continuous, {list(self._command_spec.axes)} of cmd_vel')
        self.get_logger().info(f"{p['env_id']} ({kind}), {p['mode']}"
                               + (f" at {p['rate']} Hz" if p['mode'] == 'realtime' else ''))

    def _on_action(self, msg: Int32) -> None:
        if not 0 <= msg.data < self.task.action_dim:
            self.commands_rejected += 1
            self.get_logger().warning(
                f'action {msg.data} rejected: {self._p["env_id"]} has actions 0 to '
                f'{self.task.action_dim - 1}', throttle_duration_sec=5.0)
            return
        self._take_command(np.array([float(msg.data)]))

    def _on_cmd_vel(self, msg: Twist) -> None:
        values = np.array([getattr(getattr(msg, axis.split('.')[0]), axis.split('.')[1])
                           for axis in self._command_spec.axes], np.float64)
        if not np.isfinite(values).all():
            self.commands_rejected += 1
            self.get_logger().warning('non-finite cmd_vel rejected', throttle_duration_sec=5.0)
            return
        self._take_command(np.clip(values / np.asarray(self._command_spec.limits), -1.0, 1.0))

    def _take_command(self, action: np.ndarray) -> None:
        self._command, self._command_time = action, time.monotonic()
        if self._p['mode'] == 'lockstep':
            self._step(action)

    def _on_tick(self) -> None:
        fresh = (self._command is not None
                 and time.monotonic() - self._command_time <= self._p['command_timeout'])
        if fresh:
            self._step(self._command)
        elif self._command is not None and not self.task.discrete:
            self._step(np.zeros(self.task.action_dim))  # a stale velocity becomes a stop
        else:
            self._publish_frame()

    def _republish_if_unanswered(self) -> None:
        if time.monotonic() - self._published_time > self._p['command_timeout']:
            self._publish_frame()

    def _step(self, action: np.ndarray) -> None:
        start = time.perf_counter()
        self._frame, reward, terminated, truncated = self.task.step(action)
        ended = terminated or truncated
        self.steps += 1
        self._reward_pub.publish(Float32(data=float(reward)))
        self._end_pub.publish(Bool(data=bool(ended)))
        if ended:
            self.episodes += 1
            self._frame = self.task.reset()
        self._step_ms.add(1e3 * (time.perf_counter() - start))
        self._publish_frame()

    def _publish_frame(self) -> None:
        msg = Image()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._p['frame_id']
        fill_bgr8(msg, self._frame)
        self._image_pub.publish(msg)
        self.frames += 1
        self._published_time = time.monotonic()

    def _report(self):
        step = self._step_ms.summary()
        values = {'steps': self.steps, 'episodes': self.episodes, 'frames_published': self.frames,
                  'commands_rejected': self.commands_rejected, 'step_ms_p50': step['p50'],
                  'step_ms_p99': step['p99']}
        if self.steps == 0:
            return WARN, 'waiting for the first command', values
        return OK, 'ok', values

    def shutdown(self) -> None:
        self.task.close()


def main(args=None):
    sys.exit(run_node(SimEnvNode, args))


if __name__ == '__main__':
    main()
