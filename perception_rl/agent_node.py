"""agent_node: one cmd_vel and one focus_roi for every features message; PPO with curiosity."""
import math
import sys
import time
from collections import deque
from dataclasses import replace

import numpy as np
import torch
from geometry_msgs.msg import Twist
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Bool, Float32, Float32MultiArray, Int32, MultiArrayDimension

from perception_rl import qos
from perception_rl.actor_critic import ActorCriticConfig
from perception_rl.agent import CHECKPOINT_PREFIX, Agent, AgentConfig, with_focus
from perception_rl.checkpoint import resume
from perception_rl.commands import TWIST_AXES, CommandSpec
from perception_rl.curiosity import KINDS, CuriosityConfig
from perception_rl.devices import DEVICES, available_device
from perception_rl.fovea_detail_topic import read_fovea_detail
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.health import ERROR, OK, WARN, HealthPublisher
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters
from perception_rl.policy_weights import flatten_policy
from perception_rl.ppo import FOCUS_REWARDS, PPOConfig
from perception_rl.scalar_log import ScalarLog
from perception_rl.timing import FrameTrace, LatencyWindow

FEATURE_DIM = 64
FOVEA_DETAIL_KEPT = 20
"""fovea_detail messages kept waiting for their features (one second at 20 Hz)."""
PARAMETERS = [
    ParamSpec('controlled_axes', ('linear.x', 'angular.z'),
              'Twist components the agent drives; the others stay 0', choices=TWIST_AXES),
    ParamSpec('axis_limits', (0.2, 0.5),
              'Largest magnitude of each controlled component (m/s, rad/s), in order',
              low=1e-6, high=100.0),
    ParamSpec('discrete_actions', 0, "0: a continuous actor drives cmd_vel's controlled_axes; "
              'N > 0: a categorical actor chooses one of N actions and publishes its index on '
              'action (std_msgs/Int32), cmd_vel staying zero', low=0, high=4096),
    ParamSpec('image_width', 640, 'Width of the frames focus_roi refers to', low=16, high=8192),
    ParamSpec('image_height', 480, 'Height of the frames focus_roi refers to', low=16,
              high=8192),
    ParamSpec('roi_width', DEFAULT_ROI_SIZE, 'Width of the fovea region in pixels',
              low=1, high=8192),
    ParamSpec('roi_height', DEFAULT_ROI_SIZE, 'Height of the fovea region in pixels',
              low=1, high=8192),
    ParamSpec('learn', True, 'Store transitions and run PPO updates', dynamic=True),
    ParamSpec('publish_commands', True, 'Publish motor commands (cmd_vel, or action); false '
              'for learning from a replayed recording: the agent still acts, learns and '
              'publishes focus_roi, but no command leaves it, not even a zero one'),
    ParamSpec('rollout_length', 256, 'Transitions per PPO update', low=16, high=65536),
    ParamSpec('learning_rate', 3e-4, 'Adam learning rate of actor, critic, focus head and '
              'curiosity module', low=0.0, high=1.0),
    ParamSpec('intrinsic_coef', 0.5, 'Weight of the curiosity advantage', low=0.0, high=100.0),
    ParamSpec('curiosity', 'icm', 'Intrinsic reward: icm (forward-model error), rnd (random '
              'network distillation), snd (distillation of a VICReg-trained target) or none',
              choices=KINDS),
    ParamSpec('focus_reward', 'task', "What the focus head learns from: 'task' (REINFORCE "
              "on the task's advantage) or 'detail' (saccades rewarded by the detail the fovea "
              "then sees, from perception_node's fovea_detail topic: set its "
              'publish_fovea_detail)', choices=FOCUS_REWARDS),
    ParamSpec('reward_clip', 10.0, 'Extrinsic rewards are clipped to +-this', low=0.0,
              high=1e6),
    ParamSpec('input_timeout', 0.5, 'Seconds without features after which only zero '
              'commands are published', low=0.05, high=10.0),
    ParamSpec('seed', 0, 'Seed of the weights and the action sampling', low=0, high=2**31 - 1),
    ParamSpec('device', 'cpu', "Torch device of the PPO and curiosity updates; acting stays on "
              "the CPU ('cuda' falls back to 'cpu' with a warning where there is no GPU)",
              choices=DEVICES),
    ParamSpec('checkpoint_dir', '', "Directory to resume from and save checkpoints to "
              "('' for none)"),
    ParamSpec('checkpoint_period', 300.0, 'Seconds between periodic checkpoints',
              low=1.0, high=86400.0),
    ParamSpec('log_dir', '', "TensorBoard directory ('' for none)"),
    ParamSpec('trace_file', '', "CSV of each decision's timestamps and act time, for "
              "perception-rl bench ('' for none)"),
]
NO_FOVEA_DETAIL = ("focus_reward is 'detail' but no fovea_detail came with the features: set "
                   "perception_node's publish_fovea_detail")
TRACE_FIELDS = ('features_seq', 'start_ns', 'act_ms', 'updating', 'cmd_seq', 'publish_ns',
                'end_ns')


class AgentNode(Node):
    """features (+ reward) -> Agent.act -> cmd_vel, focus_roi."""

    def __init__(self, **kwargs):
        super().__init__('agent_node', **kwargs)
        p = declare_parameters(self, PARAMETERS, on_change=self._on_change)
        torch.set_num_threads(1)
        try:
            self.command_spec = CommandSpec(tuple(p['controlled_axes']), tuple(p['axis_limits']))
        except ValueError as error:
            raise ParameterError(f"parameters 'controlled_axes'/'axis_limits': {error}") from None
        discrete = self._discrete = p['discrete_actions'] > 0
        config = with_focus(AgentConfig(
            model=replace(ActorCriticConfig(), feature_dim=FEATURE_DIM, discrete=discrete,
                          action_dim=(p['discrete_actions'] if discrete
                                      else len(self.command_spec.axes))),
            ppo=replace(PPOConfig(), learning_rate=p['learning_rate'],
                        int_coef=p['intrinsic_coef']),
            curiosity=replace(CuriosityConfig(), kind=p['curiosity']),
            rollout_length=p['rollout_length'], reward_clip=p['reward_clip'], seed=p['seed'],
            device=available_device(p['device'], self.get_logger()), update_process=True),
            p['focus_reward'])
        self.agent = Agent(config)
        self.agent.learning = p['learn']
        self._p = p
        if p['checkpoint_dir']:
            try:
                note, unreadable = resume(self.agent, p['checkpoint_dir'], CHECKPOINT_PREFIX)
                (self.get_logger().warning if unreadable else self.get_logger().info)(note)
            except ValueError as error:
                self.agent.close()
                raise ParameterError(f"parameter 'checkpoint_dir': {error}") from None
            self.create_timer(p['checkpoint_period'], self._save_periodically)
        self._scalars = ScalarLog(p['log_dir'])
        self._logged_updates = self.agent.updates
        self._reward = 0.0
        self._episode_ended = False
        self.rewards_rejected = 0
        self.rewards_clipped = 0
        self.features_rejected = 0
        self._fovea_seen: deque[tuple[int, tuple[tuple[float, float], float]]] = deque(
            maxlen=FOVEA_DETAIL_KEPT)
        """(DDS sequence number, fovea_detail) in arrival order, until their features come."""
        self._focus = (0.0, 0.0)  # the last focus decided, clipped to the frame
        self.fovea_details_paired = 0
        self.fovea_details_missing = 0
        self.fovea_details_rejected = 0
        self.commands = 0
        self._last_input = time.monotonic()
        self._stale = True
        self._tick = LatencyWindow()
        self._tick_updating = LatencyWindow()  # the ticks while a PPO update runs
        self._trace = FrameTrace(p['trace_file'], TRACE_FIELDS) if p['trace_file'] else None
        self.commands_published = 0  # cmd_vel's DDS sequence number, watchdog's zeros included
        publishes = p['publish_commands']
        self._cmd_pub = (self.create_publisher(Twist, 'cmd_vel', qos.LATEST,
                                               qos_overriding_options=qos.overridable())
                         if publishes else None)
        self._roi_pub = self.create_publisher(RegionOfInterest, 'focus_roi', qos.LATEST)
        self._action_pub = (self.create_publisher(Int32, 'action', qos.LATEST)
                            if discrete and publishes else None)
        self._policy_pub = self.create_publisher(Float32MultiArray, 'policy_weights', qos.POLICY)
        self._publish_policy()
        if p['focus_reward'] == 'detail':  # before features: it is taken first when both wait
            self.create_subscription(Float32MultiArray, 'fovea_detail', self._on_fovea_detail,
                                     qos.FEATURES)
        self.create_subscription(Float32MultiArray, 'features', self._on_features, qos.FEATURES,
                                 qos_overriding_options=qos.overridable())
        self.create_subscription(Float32, 'reward', self._on_reward, qos.REWARDS)
        self.create_subscription(Bool, 'episode_end', self._on_episode_end, qos.REWARDS)
        # The watchdog runs on steady time: it must stop the robot even if the ROS clock
        # (sim time from a bag) stalls. It checks five times per input_timeout and stops the
        # robot one check early, so the zero command goes out within input_timeout of the last
        # features.
        self._watchdog_period = p['input_timeout'] / 5
        self.create_timer(self._watchdog_period, self._watchdog,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._health = HealthPublisher(self, self._report)
        controls = (f"one of {p['discrete_actions']} actions on action" if discrete else
                    f'{list(self.command_spec.axes)} within {list(self.command_spec.limits)}')
        if not publishes:
            controls = f'nothing (publish_commands is false; the policy would drive {controls})'
        self.get_logger().info(
            f"controlling {controls}, rollout {p['rollout_length']}, learn={p['learn']}")

    def _on_change(self, name, value) -> None:
        if name == 'learn':
            self.agent.learning = value
            self.agent.forget_previous()

    def _on_reward(self, msg: Float32) -> None:
        if not math.isfinite(msg.data):
            self.rewards_rejected += 1
            self.get_logger().warning(f'non-finite reward {msg.data} ignored',
                                      throttle_duration_sec=5.0)
            return
        if abs(msg.data) > self._p['reward_clip']:  # the agent clips it; counted to be seen
            self.rewards_clipped += 1
        self._reward += msg.data

    def _on_episode_end(self, msg: Bool) -> None:
        self._episode_ended |= bool(msg.data)

    def _on_fovea_detail(self, msg: Float32MultiArray, info: MessageInfo) -> None:
        try:
            seen = read_fovea_detail(msg)
        except ValueError as error:
            self.fovea_details_rejected += 1
            self.get_logger().warning(f'fovea_detail rejected: {error}',
                                      throttle_duration_sec=5.0)
            return
        self._fovea_seen.append((info['publication_sequence_number'], seen))

    def _fovea_of(self, seq: int) -> tuple[tuple[float, float], float]:
        """The fovea centre and detail of the features with this sequence number; where
        their fovea_detail has not come, the last focus and NaN (no focus reward)."""
        if self._p['focus_reward'] != 'detail':
            return self._focus, math.nan
        waiting = self._fovea_seen
        while waiting and waiting[0][0] < seq:  # details whose features never came
            waiting.popleft()
        if not waiting or waiting[0][0] != seq:
            self.fovea_details_missing += 1
            if not self.fovea_details_paired:
                self.get_logger().warning(NO_FOVEA_DETAIL, throttle_duration_sec=10.0)
            return self._focus, math.nan
        self.fovea_details_paired += 1
        return waiting.popleft()[1]

    def _on_features(self, msg: Float32MultiArray, info: MessageInfo) -> None:
        start = time.perf_counter()
        start_ns = time.time_ns()
        updating = self.agent.updating
        features = np.asarray(msg.data, np.float32)
        if features.shape != (FEATURE_DIM,) or not np.isfinite(features).all():
            self.features_rejected += 1
            self.get_logger().warning(
                f'features rejected: need {FEATURE_DIM} finite floats, got {features.size}',
                throttle_duration_sec=5.0)
            return
        reward, self._reward = self._reward, 0.0
        ended, self._episode_ended = self._episode_ended, False
        if self._stale:  # inputs resumed: the gap is not a transition
            self.agent.forget_previous()
        centre, detail = self._fovea_of(info['publication_sequence_number'])
        decision = self.agent.act(features, reward, ended, detail, centre)
        self._focus = tuple(np.clip(decision.focus, -1.0, 1.0).tolist())
        act_ms = 1e3 * (time.perf_counter() - start)
        publish_ns = time.time_ns()
        if self._action_pub is not None:
            self._action_pub.publish(Int32(data=int(decision.action[0])))
        elif not self._discrete:
            self._publish_command(self.command_spec.command(decision.action))
        roi = Roi.around(float(decision.focus[0]), float(decision.focus[1]),
                         self._p['image_width'], self._p['image_height'],
                         self._p['roi_width'], self._p['roi_height'])
        self._roi_pub.publish(RegionOfInterest(x_offset=roi.x, y_offset=roi.y,
                                               width=roi.width, height=roi.height))
        self._last_input = time.monotonic()
        self._stale = False
        self.commands += 1
        tick_ms = 1e3 * (time.perf_counter() - start)
        self._tick.add(tick_ms)
        if updating:
            self._tick_updating.add(tick_ms)
        if self._trace is not None:
            self._trace.row(info['publication_sequence_number'], start_ns, act_ms, updating,
                            self.commands_published, publish_ns, time.time_ns())

    def _publish_command(self, values: dict[str, float]) -> None:
        if self._cmd_pub is None:  # publish_commands is off
            return
        msg = Twist()
        for axis, value in values.items():
            group, component = axis.split('.')
            setattr(getattr(msg, group), component, value)
        self._cmd_pub.publish(msg)
        self.commands_published += 1

    def _publish_policy(self) -> None:
        """The acting policy, for perception's pisco loss (policy_weights.py); pisco compares
        Gaussian policies, so a categorical actor publishes none."""
        if self._discrete:
            return
        labels, data = flatten_policy(self.agent.policy)
        msg = Float32MultiArray(data=data.tolist())
        msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=size)
                          for label, size in labels]
        self._policy_pub.publish(msg)

    def _watchdog(self) -> None:
        if time.monotonic() - self._last_input > self._p['input_timeout'] - self._watchdog_period:
            if not self._stale:
                self.get_logger().warning(
                    f"no features for {self._p['input_timeout']} s: publishing zero commands")
            self._stale = True
            self._publish_command(self.command_spec.command(np.zeros(len(self.command_spec.axes))))

    def _report(self):
        agent = self.agent
        if agent.updates != self._logged_updates:
            self._logged_updates = agent.updates
            self._publish_policy()
            self._scalars.write({f'agent/{k}': v for k, v in agent.last_update.items()},
                                agent.steps)
        if agent.last_error is not None:
            self.get_logger().error(f'update failed: {agent.last_error}')
            agent.last_error = None
        tick, during_update = self._tick.summary(), self._tick_updating.summary()
        values = {'steps': agent.steps, 'updates': agent.updates, 'updating': agent.updating,
                  'updates_skipped': agent.updates_skipped,
                  'intrinsic_reward': agent.last_update.get('intrinsic_reward', 0.0),
                  'extrinsic_reward': agent.last_update.get('extrinsic_reward', 0.0),
                  'commands': self.commands, 'stale_inputs': self._stale,
                  'publish_commands': self._cmd_pub is not None,
                  'tick_ms_p50': tick['p50'], 'tick_ms_p99': tick['p99'],
                  'tick_ms_p99_during_update': during_update['p99'],
                  'features_rejected': self.features_rejected,
                  'rewards_rejected': self.rewards_rejected,
                  'rewards_clipped': self.rewards_clipped,
                  **({'fovea_details_paired': self.fovea_details_paired,
                      'fovea_details_missing': self.fovea_details_missing,
                      'fovea_details_rejected': self.fovea_details_rejected}
                     if self._p['focus_reward'] == 'detail' else {}),
                  'nonfinite_steps_skipped': agent.learner.last_good.skipped,
                  'weights_restored': agent.learner.last_good.restores,
                  'update_process_restarts': agent.update_process_restarts}
        if self._stale:
            message = ('no features: commanding zero' if self._cmd_pub is not None
                       else 'no features')
            return (WARN if self.commands == 0 else ERROR), message, values
        if self.fovea_details_missing and not self.fovea_details_paired:
            return WARN, NO_FOVEA_DETAIL, values
        return OK, 'ok', values

    def _save_periodically(self) -> None:
        if self.agent.updating:  # saving would wait for the update, and acting with it
            self.get_logger().info('PPO update running: checkpoint deferred by 1 s')
            self._retry = self.create_timer(1.0, self._retry_save)
            return
        self._save_checkpoint(timeout=0.0)

    def _retry_save(self) -> None:
        self.destroy_timer(self._retry)
        self._save_periodically()

    def _save_checkpoint(self, timeout: float) -> None:
        try:
            path = self.agent.save(self._p['checkpoint_dir'], timeout=timeout)
            self.get_logger().info(f'checkpoint {path}')
        except (OSError, ValueError, RuntimeError) as error:
            self.get_logger().error(f'checkpoint not saved: {error}')

    def shutdown(self) -> None:
        """Stop the robot, then save: the zero command must not wait for the disk.

        The final checkpoint is on disk within 4 s of the signal: 0.5 s at most for the zero
        command's acknowledgement, 2 s at most for a running PPO update, then the update is
        abandoned and the state from before it written.
        """
        self._publish_command(self.command_spec.command(np.zeros(len(self.command_spec.axes))))
        if self._cmd_pub is not None:
            self._cmd_pub.wait_for_all_acked(timeout=Duration(seconds=0.5))
        if self._p['checkpoint_dir']:
            self._save_checkpoint(timeout=2.0)
        self.agent.close()
        self._scalars.close()
        if self._trace is not None:
            self._trace.close()


def main(args=None):
    sys.exit(run_node(AgentNode, args))


if __name__ == '__main__':
    main()
