"""Fault injection on the real nodes: killed processes, signals, garbage messages, bad values.

Each test runs the package's executables as OS processes and watches them from this process
over DDS, as a robot's other software would.
"""
import math
import signal
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_nodes_integration import Recorder

from perception_rl.image_conversion import CHANNELS, ImageError, image_to_bgr

pytestmark = pytest.mark.timeout(240)

SMALL = {'image_width': 160, 'image_height': 120}
"""Camera frames small enough for three nodes to share a loaded 2-core machine."""
AGENT = {**SMALL, 'roi_width': 48, 'roi_height': 48}
INPUT_TIMEOUT = 0.5
LIMITS = {0: 0.2, 5: 0.5}  # the default controlled axes: linear.x, angular.z


def _outputs(*nodes) -> str:
    return '\n'.join(f'--- {n.process.args[0]}\n{n.output()[-3000:]}' for n in nodes)


def _nonzero(command) -> bool:
    return any(v != 0.0 for v in command)


def _counter(recorder, node: str, key: str) -> int:
    value = recorder.latest(node, key)
    return int(value) if value is not None else 0


def _set_parameter(recorder, spin, node: str, name: str, value):
    """Set one parameter through the node's SetParameters service (as `ros2 param set`)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = recorder.node.create_client(SetParameters, f'{node}/set_parameters')
    assert client.wait_for_service(timeout_sec=20.0), f'{node} has no parameter service'
    future = client.call_async(SetParameters.Request(
        parameters=[Parameter(name, value=value).to_parameter_msg()]))
    assert spin(recorder.node, 10.0, until=future.done)
    recorder.node.destroy_client(client)
    return future.result().results[0]


def test_killing_perception_stops_the_robot_until_features_resume(ros_context, start_node,
                                                                  spin):
    nodes = [start_node('camera_node', {'source': 'synthetic', **SMALL}),
             start_node('perception_node'),
             start_node('agent_node', {**AGENT, 'input_timeout': INPUT_TIMEOUT})]
    recorder = Recorder(ros_context)
    moving = lambda: sum(map(_nonzero, recorder.commands)) >= 20  # noqa: E731
    assert spin(recorder.node, 90.0, until=moving), 'no commands:\n' + _outputs(*nodes)

    nodes[1].process.kill()  # kill -9: no shutdown code runs in perception
    killed = time.time()
    nodes[1].process.wait()
    spin(recorder.node, 4.0)
    # Judged by when the agent wrote each command (its DDS source timestamp, on this machine's
    # clock), not by when this process got round to it: a stall of the test process must not
    # look like a late stop.
    after = [(t, c) for t, c in zip(recorder.command_sent, recorder.commands)
             if t >= killed - 1.0]
    last_moving = max(t for t, c in after if _nonzero(c))
    zeros = [t for t, c in after if t > last_moving]
    assert zeros, 'no zero command after perception died:\n' + _outputs(*nodes)
    stopped_after = zeros[0] - last_moving
    print(f'\nlast non-zero command written {last_moving - killed:+.3f} s from the kill, first '
          f'zero command {stopped_after:.3f} s after it; {len(zeros)} zero commands in the '
          f'{after[-1][0] - zeros[0]:.1f} s that followed')
    # input_timeout is the agent's bound; 0.2 s more for the scheduling of a loaded machine.
    assert stopped_after <= INPUT_TIMEOUT + 0.2, stopped_after
    assert last_moving < killed + 0.5  # only features already on their way were acted on
    assert len(zeros) >= 20, 'the agent must keep commanding zero, not fall silent'
    assert recorder.latest('agent_node', 'stale_inputs') == 'True'

    restarted = start_node('perception_node')
    resumed_from = len(recorder.commands)
    moving_again = lambda: sum(  # noqa: E731
        map(_nonzero, recorder.commands[resumed_from:])) >= 5
    assert spin(recorder.node, 90.0, until=moving_again), \
        'commands did not resume:\n' + _outputs(restarted, nodes[2])
    for command in recorder.commands:
        assert all(math.isfinite(v) for v in command)
        assert all(abs(v) <= LIMITS.get(axis, 0.0) + 1e-9 for axis, v in enumerate(command))
    recorder.node.destroy_node()
    codes = [node.stop(signal.SIGINT) for node in (nodes[0], restarted, nodes[2])]
    assert codes == [0, 0, 0], _outputs(nodes[0], restarted, nodes[2])


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_stops_the_robot_saves_a_checkpoint_and_exits_cleanly(
        ros_context, start_node, spin, tmp_path, sig):
    checkpoints = tmp_path / 'checkpoints'
    saved = {'checkpoint_dir': str(checkpoints), 'checkpoint_period': 1.0}
    camera = start_node('camera_node', {'source': 'synthetic', **SMALL})
    perception = start_node('perception_node', saved)
    agent = start_node('agent_node', {**AGENT, **saved, 'rollout_length': 32})
    recorder = Recorder(ros_context)
    trained = lambda: (_counter(recorder, 'agent_node', 'updates') >= 1  # noqa: E731
                       and sum(map(_nonzero, recorder.commands)) >= 20)
    assert spin(recorder.node, 120.0, until=trained), _outputs(camera, perception, agent)

    for node, prefix in ((agent, 'agent'), (perception, 'perception'), (camera, None)):
        sent, sent_wall = time.monotonic(), time.time()
        node.process.send_signal(sig)
        while node.process.poll() is None and time.monotonic() - sent < 15.0:
            spin(recorder.node, 0.05)
        exited = time.monotonic() - sent
        spin(recorder.node, 0.5)
        output = node.output()
        assert node.process.poll() == 0, output
        assert 'Traceback' not in output, output
        print(f'\n{node.process.args[0].rsplit("/", 1)[1]}: {sig.name} -> exit 0 in '
              f'{exited:.2f} s', end='')
        if prefix is None:
            continue
        newest = max(checkpoints.glob(f'{prefix}-*.safetensors'), key=lambda p: p.stat().st_mtime)
        written = newest.stat().st_mtime - sent_wall
        print(f', final checkpoint {newest.name} {written:.2f} s after the signal', end='')
        assert 0.0 <= written <= 4.0, (newest, written)
        if prefix == 'agent':
            stamps = recorder.stamps['cmd_vel']
            assert stamps[-1] > sent and recorder.commands[-1] == (0.0,) * 6, \
                'the last command before the agent exited was not zero'
    assert not list(checkpoints.glob('.*tmp'))

    if sig == signal.SIGINT:
        _resume_after_damage(recorder, start_node, spin, checkpoints, saved)
    recorder.node.destroy_node()


def _resume_after_damage(recorder, start_node, spin, checkpoints, saved):
    """Truncate the newest perception checkpoint; both nodes continue their counts."""
    from perception_rl.checkpoint import checkpoints as listed
    newest, previous = listed(checkpoints, 'perception')[:2]
    newest.write_bytes(newest.read_bytes()[:1000])
    agent_steps = int(listed(checkpoints, 'agent')[0].name.split('-')[1].split('.')[0])
    previous_steps = int(previous.name.split('-')[1].split('.')[0])
    recorder.diagnostics.clear()
    camera = start_node('camera_node', {'source': 'synthetic', **SMALL})
    perception = start_node('perception_node', saved)
    agent = start_node('agent_node', {**AGENT, **saved, 'rollout_length': 32})
    reporting = lambda: (recorder.latest('perception_node', 'train_steps') is not None  # noqa
                         and recorder.latest('agent_node', 'steps') is not None)
    assert spin(recorder.node, 90.0, until=reporting), _outputs(camera, perception, agent)
    assert f'resumed from {previous}' in perception.output()
    assert f'{newest.name}: ' in perception.output()  # why it was set aside, in the same line
    assert (checkpoints / (newest.name + '.corrupt')).exists()
    assert _counter(recorder, 'perception_node', 'train_steps') >= previous_steps
    assert _counter(recorder, 'agent_node', 'steps') >= agent_steps
    assert 'resumed from' in agent.output()
    for node in (agent, perception, camera):
        assert node.stop(signal.SIGINT) == 0, node.output()


@st.composite
def garbage_images(draw):
    """Image fields as a broken driver or a hostile sender might fill them."""
    encoding = draw(st.one_of(st.sampled_from(sorted(CHANNELS)), st.sampled_from(
        ['yuv422', '16UC1', 'BGR8', '', 'jpeg', 'bgr8 '])))
    size = st.one_of(st.integers(0, 64), st.sampled_from([2**16, 2**31, 2**32 - 1]))
    height, width = draw(size), draw(size)
    step = draw(st.one_of(st.integers(0, 300), st.sampled_from([2**32 - 1])))
    data = draw(st.one_of(st.binary(max_size=4000),
                          st.builds(bytes, st.integers(0, 64 * 64 * 4))))
    return encoding, height, width, step, data


def _image(encoding, height, width, step, data, stamp_s: float):
    from sensor_msgs.msg import Image
    msg = Image(encoding=encoding, height=height, width=width, step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(stamp_s % 1 * 1e9)
    return msg


def test_garbage_images_are_counted_and_good_frames_still_give_features(ros_context,
                                                                        start_node, spin):
    from geometry_msgs.msg import Twist
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, RegionOfInterest

    # A queue deep enough on both sides that nothing sent is dropped: the counts must add up.
    perception = start_node('perception_node', {
        'qos_overrides./image_raw.subscription.depth': 1000})
    recorder = Recorder(ros_context)
    deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    images = recorder.node.create_publisher(Image, 'image_raw', deep)
    rois = recorder.node.create_publisher(RegionOfInterest, 'focus_roi', 10)
    twists = recorder.node.create_publisher(Twist, 'cmd_vel', 10)
    rng = np.random.default_rng(0)
    clock = [1e6]

    def good(encoding='bgr8', height=120, width=160):
        channels = CHANNELS[encoding]
        pixels = rng.integers(0, 256, (height, width * channels), np.uint8)
        clock[0] += 0.05
        return _image(encoding, height, width, width * channels, pixels.tobytes(), clock[0])

    assert spin(recorder.node, 60.0, until=lambda: images.get_subscription_count() > 0)
    images.publish(good())
    assert spin(recorder.node, 60.0, until=lambda: recorder.features), perception.output()
    sent = {'good': 1, 'rejected': 0}

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fields=garbage_images())
    def send_garbage(fields):
        try:
            image_to_bgr(*fields)
            sent['good'] += 1  # garbage that happens to be a valid (tiny) image
        except ImageError:
            sent['rejected'] += 1
        clock[0] += 0.05
        images.publish(_image(*fields, clock[0]))
        spin(recorder.node, 0.01)

    send_garbage()
    for encoding in sorted(CHANNELS):  # every accepted encoding converts
        images.publish(good(encoding))
    images.publish(good('bgr8', 1080, 1920))  # a large frame is fine
    sent['good'] += len(CHANNELS) + 1
    clock[0] -= 3600.0  # a looping bag: time runs backwards
    images.publish(good())
    images.publish(good())
    negative = good()
    negative.header.stamp.sec = -5  # a stamp no clock can hold
    images.publish(negative)
    sent['rejected'] += 1
    rois.publish(RegionOfInterest(x_offset=100000, y_offset=5, width=4000, height=10))
    twists.publish(Twist())
    bad_twist = Twist()
    bad_twist.linear.x = float('nan')
    twists.publish(bad_twist)
    spin(recorder.node, 0.5)
    images.publish(good())  # seen through the clipped ROI, after the NaN command
    sent['good'] += 3

    settled = lambda: (_counter(recorder, 'perception_node', 'frames') == sent['good']  # noqa
                       and _counter(recorder, 'perception_node', 'images_rejected')
                       == sent['rejected'])
    spin(recorder.node, 120.0, until=settled)
    keys = ('frames', 'images_rejected', 'images_rejected_encoding', 'images_rejected_size',
            'images_rejected_layout', 'images_rejected_stamp', 'time_jumps',
            'rois_out_of_range', 'cmd_vel_non_finite', 'frames_failed')
    print('\nsent', sent, 'perception reports',
          {k: recorder.latest('perception_node', k) for k in keys})
    assert perception.process.poll() is None, perception.output()
    assert _counter(recorder, 'perception_node', 'images_rejected') == sent['rejected']
    assert _counter(recorder, 'perception_node', 'frames') == sent['good']
    assert len(recorder.features) == sent['good']
    assert sum(_counter(recorder, 'perception_node', f'images_rejected_{reason}')
               for reason in ('encoding', 'size', 'layout', 'stamp')) == sent['rejected']
    assert _counter(recorder, 'perception_node', 'images_rejected_stamp') == 1
    assert _counter(recorder, 'perception_node', 'time_jumps') == 1
    assert _counter(recorder, 'perception_node', 'rois_out_of_range') == 1
    assert _counter(recorder, 'perception_node', 'cmd_vel_non_finite') == 1
    assert _counter(recorder, 'perception_node', 'frames_failed') == 0
    assert all(np.isfinite(f).all() and f.shape == (64,) for f in recorder.features)
    assert perception.output().count('image rejected') <= 2, 'warnings are throttled'

    # Parameters at run time, as `ros2 param set` sends them.
    refused = _set_parameter(recorder, spin, 'perception_node', 'train_every', 0)
    assert not refused.successful
    assert 'train_every' in refused.reason and '1000' in refused.reason, refused.reason
    refused = _set_parameter(recorder, spin, 'perception_node', 'train', 'no')
    assert not refused.successful and "'train'" in refused.reason and 'bool' in refused.reason
    refused = _set_parameter(recorder, spin, 'perception_node', 'fovea_size', 32)
    assert not refused.successful and 'read-only' in refused.reason, refused.reason
    accepted = _set_parameter(recorder, spin, 'perception_node', 'train_budget_ms', 20)
    assert accepted.successful, accepted.reason  # an integer where a float is expected

    recorder.node.destroy_node()
    assert perception.stop(signal.SIGINT) == 0, perception.output()
    assert 'Traceback' not in perception.output()


def test_bad_features_and_rewards_are_counted_and_acting_goes_on(ros_context, start_node,
                                                                 spin):
    from std_msgs.msg import Float32, Float32MultiArray

    # An integer where a float is expected, at start: input_timeout 1 (s).
    agent = start_node('agent_node', {**AGENT, 'input_timeout': 1, 'reward_clip': 10.0})
    recorder = Recorder(ros_context)
    features = recorder.node.create_publisher(Float32MultiArray, 'features', 10)
    rewards = recorder.node.create_publisher(Float32, 'reward', 50)
    assert spin(recorder.node, 60.0, until=lambda: features.get_subscription_count() > 0
                and rewards.get_subscription_count() > 0), agent.output()
    rng = np.random.default_rng(0)

    def send(values):
        features.publish(Float32MultiArray(data=np.asarray(values, np.float32).tolist()))
        spin(recorder.node, 0.05)

    for value in (float('nan'), float('inf'), -float('inf'), 1e30, -3e38, 5.0):
        rewards.publish(Float32(data=value))
    for _ in range(3):
        send(rng.standard_normal(64))
    bad = [rng.standard_normal(10), rng.standard_normal(65), [],
           np.full(64, np.nan), np.r_[rng.standard_normal(63), np.inf]]
    for values in bad:
        send(values)
    for _ in range(3):
        send(rng.standard_normal(64))
    reported = lambda: (_counter(recorder, 'agent_node', 'features_rejected')  # noqa: E731
                        == len(bad) and len(recorder.rois) == 6)
    assert spin(recorder.node, 30.0, until=reported), (dict(recorder.diagnostics),
                                                       agent.output())
    assert _counter(recorder, 'agent_node', 'rewards_rejected') == 3
    assert _counter(recorder, 'agent_node', 'rewards_clipped') == 2
    for command in recorder.commands:
        assert all(math.isfinite(v) for v in command)
        assert all(abs(v) <= LIMITS.get(axis, 0.0) + 1e-9 for axis, v in enumerate(command))

    refused = _set_parameter(recorder, spin, 'agent_node', 'learn', 1)
    assert not refused.successful and "'learn'" in refused.reason, refused.reason
    refused = _set_parameter(recorder, spin, 'agent_node', 'input_timeout', 30.0)
    assert not refused.successful and 'read-only' in refused.reason, refused.reason
    recorder.node.destroy_node()
    assert agent.stop(signal.SIGTERM) == 0, agent.output()
    assert 'Traceback' not in agent.output()


def test_an_out_of_range_value_at_start_names_the_parameter_and_its_range(start_node):
    agent = start_node('agent_node', {'input_timeout': 0.01})
    assert agent.process.wait(60) == 2
    assert "'input_timeout'" in agent.output() and '[0.05, 10.0]' in agent.output(), \
        agent.output()


def test_a_checkpoint_of_another_architecture_is_refused_at_start(start_node, tmp_path):
    from dataclasses import replace

    from perception_rl.encoder import EncoderConfig
    from perception_rl.online_perception import OnlinePerception, PerceptionConfig
    OnlinePerception(PerceptionConfig(encoder=replace(EncoderConfig(), fovea_size=32))).save(
        tmp_path)
    perception = start_node('perception_node', {'checkpoint_dir': str(tmp_path)})
    assert perception.process.wait(60) == 2
    output = perception.output()
    assert "parameter 'checkpoint_dir'" in output and \
        'encoder.fovea_size: 32 in the checkpoint, 48 here' in output, output
    assert 'Traceback' not in output
    assert len(list(tmp_path.glob('perception-*.safetensors'))) == 1  # nothing pruned
