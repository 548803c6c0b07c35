"""Recordings: bag_player and bag_recorder as real processes with perception and the agent,
and `perception-rl pretrain`; the bags are real rosbag2 files made by make_test_bag.py."""
import math
import os
import re
import signal
import subprocess
import time
from collections import defaultdict

import numpy as np
import pytest
from make_test_bag import make_bag
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from conftest import BIN
from perception_rl.bags import open_bag

pytestmark = pytest.mark.timeout(240)
RATE_HZ = 20.0
SECONDS = 3.0
FRAMES = round(SECONDS * RATE_HZ)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """The recordings the tests play: 3 s at 20 Hz of 320x240 frames, raw and JPEG, in MCAP
    and sqlite3; a 1.5 s one to loop; one without images; one of a type nobody installed."""
    root = tmp_path_factory.mktemp('bags')
    make_bag(root / 'mcap', SECONDS, RATE_HZ, storage='mcap')
    make_bag(root / 'sqlite3', SECONDS, RATE_HZ, storage='sqlite3')
    make_bag(root / 'short', 1.5, RATE_HZ, storage='mcap', topics=['image_raw'])
    make_bag(root / 'no_images', 1.0, RATE_HZ, storage='mcap', topics=['cmd_vel'])
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg('int32 x', 'my_robot_msgs/msg/Thing'))
    with Writer(root / 'unknown_type', version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection('/thing', 'my_robot_msgs/msg/Thing', typestore=store)
        thing = store.types['my_robot_msgs/msg/Thing'](x=7)
        writer.write(connection, 1, store.serialize_cdr(thing, 'my_robot_msgs/msg/Thing'))
    return root


class Listener:
    """Keeps what arrives on features, cmd_vel, focus_roi and /diagnostics, with arrival times."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.node import Node
        from sensor_msgs.msg import CompressedImage, RegionOfInterest
        from std_msgs.msg import Float32MultiArray

        self.node = Node('bag_test_listener', context=context)
        self.arrivals = defaultdict(list)
        self.features = []
        self.diagnostics = defaultdict(dict)
        for msg_type, topic in ((Twist, 'cmd_vel'), (RegionOfInterest, 'focus_roi')):
            self.node.create_subscription(msg_type, topic,
                                          lambda _, t=topic: self._arrived(t), 10)
        self.node.create_subscription(Float32MultiArray, 'features', self._on_features, 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.compressed = self.node.create_publisher(CompressedImage, 'image_raw/compressed', 10)

    def _arrived(self, topic):
        self.arrivals[topic].append(time.monotonic())

    def _on_features(self, msg):
        self._arrived('features')
        self.features.append(np.array(msg.data, np.float32))

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name].update({kv.key: kv.value for kv in status.values})

    def value(self, node_name: str, key: str) -> str | None:
        return self.diagnostics.get(f'{node_name}: health', {}).get(key)


def _wait_for_subscribers(listener, spin, topic: str, count: int, nodes) -> None:
    ready = lambda: listener.node.count_subscribers(topic) >= count  # noqa: E731
    assert spin(listener.node, 60.0, until=ready), \
        f'fewer than {count} subscribers on {topic} after 60 s:\n' + '\n'.join(
            n.output()[-2000:] for n in nodes)


def _play(start_node, listener, spin, params: dict):
    """Run bag_player to its end while spinning the listener; its NodeProcess."""
    player = start_node('bag_player', {'wait_for_subscribers': 1, 'delay': 0.5, **params})
    assert spin(listener.node, 60.0, until=lambda: player.process.poll() is not None), \
        player.output()
    spin(listener.node, 1.0)  # the last frames' features
    assert player.process.returncode == 0, player.output()
    return player


def test_replay_at_1x_and_2x_gives_features_for_nearly_every_frame(ros_context, start_node,
                                                                     spin, bags):
    """Raw frames from MCAP at 1x, JPEG frames from sqlite3 at 2x, then both streams of the
    same frames at once (each frame counts once), into perception_node on sim time; each pass
    starts the recording's time again (a jump back)."""
    from sensor_msgs.msg import CompressedImage

    perception = start_node('perception_node', {'use_sim_time': True})
    listener = Listener(ros_context)
    matched = lambda: listener.compressed.get_subscription_count() > 0  # noqa: E731
    assert spin(listener.node, 60.0, until=matched), perception.output()
    # Bad payloads: a warning and a counter each, never a crash or a feature.
    for data in (b'', b'not a jpeg', b'\xff\xd8\xff\xe0' + bytes(100)):
        listener.compressed.publish(CompressedImage(format='jpeg', data=data))
        spin(listener.node, 0.5)  # perception keeps only the newest frame
    assert listener.features == []

    for storage, topics, rate in (('mcap', 'image_raw', 1.0),
                                  ('sqlite3', 'image_raw/compressed', 2.0),
                                  ('mcap', 'image_raw, image_raw/compressed', 2.0)):
        listener.arrivals['features'].clear()
        player = _play(start_node, listener, spin, {
            'bag_path': bags / storage, 'rate': rate, 'topics': f'[{topics}]'})
        arrivals = listener.arrivals['features']
        assert len(arrivals) >= 0.9 * FRAMES, (storage, rate, len(arrivals), player.output())
        assert len(arrivals) <= FRAMES
        expected = (FRAMES - 1) / RATE_HZ / rate
        span = arrivals[-1] - arrivals[0]
        print(f'\n{storage} [{topics}] at {rate:g}x: {len(arrivals)} of {FRAMES} frames gave '
              f'features over {span:.2f} s (recording span {expected:.2f} s); '
              + player.output().strip().splitlines()[-1])
        assert 0.8 * expected <= span <= 1.25 * expected, (span, expected)
        achieved = float(re.search(r'rate ([\d.]+) \(asked', player.output()).group(1))
        assert abs(achieved - rate) <= 0.05 * rate, player.output()

    features = np.stack(listener.features)
    assert features.shape[1] == 64 and np.isfinite(features).all()
    assert listener.value('perception_node', 'images_rejected') == '3'
    assert int(listener.value('perception_node', 'time_jumps')) >= 2
    assert perception.stop() == 0, perception.output()
    assert 'Traceback' not in perception.output()


def test_loop_with_agent_commands_off_and_recorder(ros_context, start_node, spin, bags,
                                                   tmp_path):
    """A looping bag (time jumps back each pass) into perception and an agent that publishes
    no commands, recorded by bag_recorder and read back with rosbags."""
    out = tmp_path / 'recorded'
    sim = {'use_sim_time': True}
    nodes = [start_node('perception_node', sim),
             start_node('agent_node', {**sim, 'publish_commands': False,
                                       'rollout_length': 32}),
             start_node('bag_recorder', {'output': out,
                                         'topics': '[features, cmd_vel, focus_roi, /diagnostics]'})]
    listener = Listener(ros_context)
    _wait_for_subscribers(listener, spin, '/image_raw', 1, nodes)  # perception
    _wait_for_subscribers(listener, spin, '/features', 3, nodes)  # listener, agent, recorder
    _wait_for_subscribers(listener, spin, '/focus_roi', 3, nodes)  # listener, perception, rec.
    player = start_node('bag_player', {'bag_path': bags / 'short', 'loop': True,
                                       'wait_for_subscribers': 1, 'delay': 0.5})
    passes = 3.5
    wanted = int(passes * 30)
    assert spin(listener.node, 60.0, until=lambda: len(listener.features) >= wanted), \
        (len(listener.features), player.output())
    # The replay goes on until the agent has adopted a PPO update: on a machine kept busy its
    # SCHED_IDLE update process gets CPU only after learner_process.STARVED_AFTER_S.
    updated = lambda: int(listener.value('agent_node', 'updates') or 0) >= 1  # noqa: E731
    assert spin(listener.node, 60.0, until=updated), listener.value('agent_node', 'updates')
    assert player.stop() == 0, player.output()
    spin(listener.node, 1.0)
    assert 'played 30 messages' in player.output()  # at least one whole pass ended

    arrivals = np.array(listener.arrivals['features'])
    gaps = np.diff(arrivals)
    assert gaps.max() < 0.5, f'features stalled for {gaps.max():.2f} s'
    rois = np.array(listener.arrivals['focus_roi'])
    assert len(rois) >= 0.9 * len(arrivals) and rois[-1] > arrivals[-1] - 0.5
    assert listener.arrivals['cmd_vel'] == [], 'publish_commands is false, yet cmd_vel came'
    assert int(listener.value('perception_node', 'time_jumps')) >= 2
    # Both learn from the replay: perception trains on most frames (training is thinned by its
    # time budget on a loaded machine, as live), the agent completes PPO updates.
    train_steps = int(listener.value('perception_node', 'train_steps'))
    print(f'\nloop: {len(arrivals)} features, perception train_steps {train_steps}, agent '
          f"updates {listener.value('agent_node', 'updates')}")
    assert train_steps >= len(arrivals) / 3, (train_steps, len(arrivals))
    assert listener.value('agent_node', 'publish_commands') == 'False'
    assert int(listener.value('agent_node', 'updates')) >= 1

    recorder = nodes[2]
    assert recorder.stop(signal.SIGTERM) == 0, recorder.output()
    reader = open_bag(out)
    counts = {name: info.msgcount for name, info in reader.topics.items()}
    features = [reader.deserialize(data, c.msgtype) for c, _, data in
                reader.messages([c for c in reader.connections if c.topic == '/features'])]
    reader.close()
    assert counts['/features'] >= len(listener.features), (counts, len(listener.features))
    assert counts['/focus_roi'] >= 0.9 * counts['/features'] and counts['/diagnostics'] > 0
    assert counts.get('/cmd_vel', 0) == 0  # perception listens, nobody publishes
    assert all(len(f.data) == 64 for f in features)
    logged = re.search(r'recorded (\d+) messages', recorder.output())
    assert logged and int(logged.group(1)) == sum(counts.values()), recorder.output()
    assert [node.stop() for node in nodes[:2]] == [0, 0]
    for node in nodes:
        assert 'Traceback' not in node.output()


@pytest.mark.parametrize('bag, params, says', [
    ('mcap', {'topics': '[camera/image_raw]'},
     ['/camera/image_raw', '/image_raw (sensor_msgs/msg/Image, 60 messages)',
      '/image_raw/compressed (sensor_msgs/msg/CompressedImage']),
    ('unknown_type', {'topics': '[thing]'}, ['no installed message type',
                                             '/thing (my_robot_msgs/msg/Thing']),
    ('unknown_type', {}, ['nothing to play', '/thing (my_robot_msgs/msg/Thing, 1 messages)']),
    ('no_such_bag', {}, ["'bag_path'", 'does not exist']),
])
def test_player_refuses_what_it_cannot_play_listing_the_bag(start_node, bags, bag, params, says):
    player = start_node('bag_player', {'bag_path': bags / bag, **params})
    assert player.process.wait(60) == 2, player.output()
    output = player.output()
    assert 'Traceback' not in output
    for text in says:
        assert text in output, output


def test_recorder_refuses_to_overwrite_a_bag(start_node, bags):
    recorder = start_node('bag_recorder', {'output': bags / 'mcap'})
    assert recorder.process.wait(60) == 2, recorder.output()
    assert "'output'" in recorder.output() and 'exists already' in recorder.output()
    assert (bags / 'mcap' / 'metadata.yaml').exists()


def _pretrain(*args):
    return subprocess.run([str(BIN / 'perception-rl'), 'pretrain', *map(str, args)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def test_pretrain_writes_a_checkpoint_perception_node_starts_from(start_node, bags, tmp_path):
    out = tmp_path / 'pretrained'
    result = _pretrain('--bag', bags / 'mcap' / 'mcap.mcap', '--out', out,
                       '--topic', 'image_raw/compressed', '--epochs', 2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'{2 * FRAMES} frames of /image_raw/compressed' in result.stdout, result.stdout
    # Every frame but the first of each pass trains (nothing links the passes).
    checkpoint = out / 'checkpoints' / f'perception-{2 * (FRAMES - 1):010d}.safetensors'
    assert checkpoint.exists(), list((out / 'checkpoints').iterdir())
    frames_per_s = float(re.search(r'([\d.]+) frames/s', result.stdout).group(1))
    assert frames_per_s > 0 and math.isfinite(frames_per_s)

    node = start_node('perception_node', {'checkpoint_dir': out / 'checkpoints'})
    deadline = time.monotonic() + 60.0
    while 'resumed from' not in node.output() and node.process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f'resumed from {checkpoint}' in node.output(), node.output()
    assert node.stop() == 0, node.output()

    no_images = _pretrain('--bag', bags / 'no_images', '--out', tmp_path / 'nothing')
    assert no_images.returncode == 1
    assert 'no image topic /image_raw or /image_raw/compressed' in no_images.stderr
    assert '/cmd_vel (geometry_msgs/msg/Twist, 20 messages)' in no_images.stderr
