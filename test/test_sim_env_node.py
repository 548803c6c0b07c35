"""sim_env_node as a ROS 2 robot: lock-step with perception and a discrete agent whose focus
learns from fovea detail, real time with a continuous command; each an OS process over real
DDS."""
import signal
import time

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(180)


class EnvRecorder:
    """What sim_env_node and agent_node publish, seen from the test process."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.node import Node
        from sensor_msgs.msg import Image, RegionOfInterest
        from std_msgs.msg import Bool, Float32, Float32MultiArray, Int32

        self.node = Node('sim_recorder', context=context)
        self.frames, self.rewards, self.ends, self.actions, self.rois = [], [], [], [], []
        self.diagnostics: dict[str, dict] = {}
        self.node.create_subscription(Image, 'image_raw', self._frame, 10)
        self.node.create_subscription(Float32, 'reward', lambda m: self.rewards.append(m.data),
                                      50)
        self.node.create_subscription(Bool, 'episode_end', lambda m: self.ends.append(m.data),
                                      50)
        self.node.create_subscription(Int32, 'action', lambda m: self.actions.append(m.data), 50)
        self.node.create_subscription(RegionOfInterest, 'focus_roi',
                                      lambda m: self.rois.append((m.x_offset, m.y_offset)), 50)
        self.fovea_detail = self.node.create_publisher(Float32MultiArray, 'fovea_detail', 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics, 10)
        self.command = self.node.create_publisher(Twist, 'cmd_vel', 10)

    def _frame(self, msg):
        self.frames.append((time.monotonic(), msg.width, msg.height, msg.encoding))

    def _diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def latest(self, name_part: str, key: str):
        for name, values in self.diagnostics.items():
            if name_part in name and key in values:
                return values[key]
        return None


def test_lockstep_loop_with_a_discrete_agent_looking_for_detail(ros_context, start_node, spin):
    """The agent's focus learns from the fovea detail perception sends with each features
    message (focus_reward 'detail'), paired with them over DDS."""
    from std_msgs.msg import Float32MultiArray
    nodes = [start_node('sim_env_node', {'env_id': 'perception_rl/Foveation-v1',
                                         'mode': 'lockstep'}),
             start_node('perception_node', {'publish_fovea_detail': True,
                                            'fovea_stream': 'pooled'}),
             start_node('agent_node', {'discrete_actions': 2, 'rollout_length': 64,
                                       'image_width': 256, 'image_height': 192,
                                       'roi_width': 48, 'roi_height': 48,
                                       'focus_reward': 'detail'})]
    recorder = EnvRecorder(ros_context)
    enough = lambda: (len(recorder.rewards) >= 150  # noqa: E731
                      and recorder.latest('agent_node', 'updates') not in (None, '0'))
    assert spin(recorder.node, 120.0, until=enough), \
        '\n'.join(n.output()[-2000:] for n in nodes)
    spin(recorder.node, 1.0)
    # Every environment step publishes one reward and one episode_end, and the agent's
    # actions are the environment's.
    assert abs(len(recorder.rewards) - len(recorder.ends)) <= 1
    assert set(np.round(recorder.rewards, 6)) <= {-0.1, 0.1}
    assert sum(recorder.ends) >= len(recorder.ends) // 10 - 1  # episodes last 10 steps
    assert set(recorder.actions) == {0, 1}
    assert all(f[1:] == (256, 192, 'bgr8') for f in recorder.frames)
    steps = int(recorder.latest('sim_env_node', 'steps'))
    assert steps >= 150 and int(recorder.latest('sim_env_node', 'commands_rejected')) == 0
    # Nearly every features message came with its fovea_detail (a few may be lost at start-up,
    # before the agent's subscription matched), and the saccadic focus moves the fovea.
    paired = int(recorder.latest('agent_node', 'fovea_details_paired'))
    missing = int(recorder.latest('agent_node', 'fovea_details_missing'))
    assert paired >= 100 and missing <= 0.05 * (paired + missing), (paired, missing)
    assert len(set(recorder.rois)) > 20
    # A malformed fovea_detail is refused, named, and the loop goes on.
    recorder.fovea_detail.publish(Float32MultiArray(data=[0.0, 0.0]))
    assert spin(recorder.node, 10.0, until=lambda: recorder.latest(
        'agent_node', 'fovea_details_rejected') not in (None, '0'))
    print(f"\nlock-step: {steps} steps, {recorder.latest('sim_env_node', 'episodes')} "
          f"episodes, agent updates {recorder.latest('agent_node', 'updates')}, fovea detail "
          f"paired {paired}, missing {missing}")
    recorder.node.destroy_node()
    codes = [node.stop(signal.SIGINT) for node in nodes]
    assert codes == [0, 0, 0], '\n'.join(n.output()[-2000:] for n in nodes)
    assert not any('Traceback' in n.output() for n in nodes)


def test_realtime_steps_at_its_rate_with_the_newest_command(ros_context, start_node, spin):
    from geometry_msgs.msg import Twist, Vector3
    node = start_node('sim_env_node', {'env_id': 'perception_rl/Pan-v0', 'mode': 'realtime',
                                       'controlled_axes': '[angular.z]', 'axis_limits': '[0.5]'})
    recorder = EnvRecorder(ros_context)
    assert spin(recorder.node, 60.0, until=lambda: len(recorder.frames) >= 10), node.output()
    assert recorder.rewards == []  # frames, but no step before the first command
    start, sent = time.monotonic(), 0
    while time.monotonic() - start < 3.0:  # the agent's role: a command at 20 Hz
        recorder.command.publish(Twist(angular=Vector3(z=0.25)))
        sent += 1
        spin(recorder.node, 0.05)
    steps_driven = len(recorder.rewards)
    frames_then = len(recorder.frames)
    spin(recorder.node, 2.0)  # no commands: a stale velocity becomes a stop, time goes on
    rate = (len(recorder.frames) - frames_then) / 2.0
    print(f'\nrealtime: {steps_driven} steps for {sent} commands in 3 s, then {rate:.1f} '
          'frames/s without commands')
    assert 45 <= steps_driven <= 75  # 20 Hz for 3 s, with start-up slack
    assert 15.0 <= rate <= 25.0
    assert all(0.0 <= r <= 1.0 for r in recorder.rewards)
    assert len(recorder.rewards) > steps_driven  # it kept stepping with a zero action
    recorder.node.destroy_node()
    assert node.stop(signal.SIGTERM) == 0 and 'Traceback' not in node.output()
