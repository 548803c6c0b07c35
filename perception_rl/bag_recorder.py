"""bag_recorder: records chosen topics into an MCAP rosbag2, without a ROS install.

Like `ros2 bag record`, it subscribes to each topic once a publisher appears (taking the type
and reliability from the graph), stores the serialized messages as they arrive, stamped with
the node's clock, and closes the bag on SIGINT or SIGTERM with everything received written.
"""
import sys
import time
from pathlib import Path

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import get_typestore

from perception_rl.bags import TYPESTORE, message_class
from perception_rl.health import OK, WARN, HealthPublisher
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters

PARAMETERS = [
    ParamSpec('output', '', "Bag directory to create; '' for rosbag2_<date>-<time> in the "
              'working directory, as ros2 bag record names it'),
    ParamSpec('topics', ('features', 'cmd_vel', 'focus_roi', '/diagnostics'),
              'Topics to record (relative names resolve in the node namespace); add image_raw '
              'or image_raw/compressed for the frames'),
]
BAG_VERSION = 8
"""rosbag2 metadata version 8: read by the Jazzy and Kilted `ros2 bag` as well as `rosbags`."""
DISCOVERY_PERIOD_S = 0.2
QUEUE_DEPTH = 100
"""Messages a subscription holds while the writer is busy (frames are about 1 MB each)."""


class BagRecorder(Node):
    """Subscribes to `topics` as they appear and writes every message to an MCAP bag."""

    def __init__(self, **kwargs):
        super().__init__('bag_recorder', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if not p['topics']:
            raise ParameterError("parameter 'topics' is empty: name the topics to record")
        output = Path(p['output'] or time.strftime('rosbag2_%Y_%m_%d-%H_%M_%S'))
        try:
            self._writer = Writer(output, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            self._writer.open()
        except WriterError as error:
            raise ParameterError(f"parameter 'output': {error}") from None
        except OSError as error:
            raise ParameterError(f"parameter 'output': cannot create {output}: {error}") from None
        self.path = output
        self._typestore = get_typestore(TYPESTORE)
        self._waiting = {self.resolve_topic_name(t) for t in p['topics']}
        self._refused: set[str] = set()
        self._connections = {}
        self.counts: dict[str, int] = {}
        # Discovery runs on steady time: with use_sim_time and no /clock yet, a ROS-time timer
        # would never fire.
        self.create_timer(DISCOVERY_PERIOD_S, self._discover,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._health = HealthPublisher(self, self._report, hardware_id=str(output))
        self.get_logger().info(f'recording {sorted(self._waiting)} into {output} (MCAP)')
        self._discover()

    def _discover(self) -> None:
        """Subscribe to each awaited topic that now has a publisher."""
        if not self._waiting:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in sorted(self._waiting & set(graph)):
            msgtype = graph[topic][0]
            cls = message_class(msgtype)
            if cls is None or msgtype not in self._typestore.types:
                if topic not in self._refused:
                    self._refused.add(topic)
                    self.get_logger().error(f'cannot record {topic}: its type {msgtype} is '
                                            'not installed or has no known definition')
                continue
            self._waiting.discard(topic)
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore)
            self.counts[topic] = 0
            self.create_subscription(cls, topic, lambda data, t=topic: self._on_message(t, data),
                                     self._qos(topic), raw=True)
            self.get_logger().info(f'recording {topic} ({msgtype})')

    def _qos(self, topic: str) -> QoSProfile:
        """Reliable unless a publisher is best effort (a reliable subscriber would not hear
        it); transient local when every publisher is (latched messages such as policy_weights)."""
        publishers = self.get_publishers_info_by_topic(topic)
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                       for i in publishers)
        latched = bool(publishers) and all(
            i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in publishers)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=QUEUE_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                        else DurabilityPolicy.VOLATILE))

    def _on_message(self, topic: str, data: bytes) -> None:
        self._writer.write(self._connections[topic], self.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def _report(self):
        values = {'messages': sum(self.counts.values()), **self.counts,
                  'waiting_for': ' '.join(sorted(self._waiting)) or '-'}
        if self._waiting:
            return WARN, f'waiting for {len(self._waiting)} topics', values
        return OK, 'ok', values

    def shutdown(self) -> None:
        self._writer.close()
        self.get_logger().info(f'recorded {sum(self.counts.values())} messages '
                               f'{self.counts} into {self.path}')


def main(args=None):
    sys.exit(run_node(BagRecorder, args))


if __name__ == '__main__':
    main()
