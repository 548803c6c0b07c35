"""bag_player: plays a rosbag2 recording on its topics, with /clock, without a ROS install.

Parameters are named as `ros2 bag play` names its options. Messages are published as the
serialized bytes stored in the bag (no decoding), so every type whose Python message package
is installed plays; the recorded timing is kept, scaled by `rate`.
"""
import sys
import threading
import time

from builtin_interfaces.msg import Time as TimeMsg
from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from perception_rl import qos
from perception_rl.bags import (BagError, connections, contents, message_class,
                                open_bag)
from perception_rl.health import OK, WARN, HealthPublisher
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters

PARAMETERS = [
    ParamSpec('bag_path', '', 'The recording: a rosbag2 directory, an .mcap or a .db3 file'),
    ParamSpec('rate', 1.0, 'Playback speed (2.0: twice as fast as recorded)', low=0.01,
              high=100.0),
    ParamSpec('loop', False, 'Play again from start_offset after the end'),
    ParamSpec('start_offset', 0.0, 'Seconds into the recording to start playing from',
              low=0.0, high=1e9),
    ParamSpec('topics', (), 'Topics to play (empty: every topic whose type is installed)'),
    ParamSpec('clock', 40.0, 'Hz at which /clock carries the recording time between '
              'messages (and just before each one), for nodes with use_sim_time (0: no /clock)',
              low=0.0, high=1000.0),
    ParamSpec('delay', 0.0, 'Seconds to wait before playing, so that subscribers can connect',
              low=0.0, high=3600.0),
    ParamSpec('wait_for_subscribers', 0, 'Before playing (and the delay), wait until every '
              'played topic has this many subscribers connected (0: do not wait)', low=0,
              high=1000),
]
CLOCK_TOPIC = '/clock'


class BagPlayer(Node):
    """Publishes a recording's messages at their recorded pace (scaled by `rate`) and /clock."""

    def __init__(self, **kwargs):
        super().__init__('bag_player', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self._p = p
        if not p['bag_path']:
            raise ParameterError("parameter 'bag_path' is empty: give a rosbag2 directory, an "
                                 '.mcap or a .db3 file')
        try:
            self._reader = open_bag(p['bag_path'])
        except BagError as error:
            raise ParameterError(f"parameter 'bag_path': {error}") from None
        length = (self._reader.end_time - self._reader.start_time) / 1e9
        if p['start_offset'] >= max(length, 1e-9):
            self._reader.close()
            raise ParameterError(f"parameter 'start_offset' is {p['start_offset']:g} s, but the "
                                 f'recording lasts {length:.3f} s')
        try:
            self._connections, self._topic_publishers = self._publishers_for(p['topics'],
                                                                             p['clock'])
        except BagError as error:
            self._reader.close()
            raise ParameterError(f"parameter 'topics': {error}") from None
        self._clock_pub = (self.create_publisher(Clock, CLOCK_TOPIC, qos.LATEST)
                           if p['clock'] > 0 else None)
        self.done = False
        self.failed = False
        self.played = 0
        self.loops = 0
        self.achieved_rate = float('nan')
        self._next_clock = 0.0
        self._stop = threading.Event()
        # Playback keeps the recording's timing on a steady clock of its own, in a thread: the
        # player is the source of ROS time here, so the node's timers (which follow /clock
        # when use_sim_time is set) cannot pace it.
        self._thread = threading.Thread(target=self._play, name='bag_player', daemon=True)
        self._health = HealthPublisher(self, self._report, hardware_id=p['bag_path'])
        topics = sorted({c.topic for c in self._connections})
        self.get_logger().info(
            f"playing {topics} from {p['bag_path']} at rate {p['rate']:g}"
            f"{', looping' if p['loop'] else ''}, from {p['start_offset']:g} s; "
            f"{'/clock at %g Hz' % p['clock'] if p['clock'] > 0 else 'no /clock'}")
        self._thread.start()

    def _publishers_for(self, topics: list[str], clock_hz: float):
        """The connections to play and a publisher per topic; BagError for what cannot play."""
        chosen = connections(self._reader, topics)
        if clock_hz > 0 and any(c.topic == CLOCK_TOPIC for c in chosen):
            self.get_logger().warning('the bag holds /clock: not played, the player publishes '
                                      'its own (set clock to 0 to play the recorded one)')
            chosen = [c for c in chosen if c.topic != CLOCK_TOPIC]
        classes = {c.topic: message_class(c.msgtype) for c in chosen}
        unknown = sorted({f'{c.topic} ({c.msgtype})' for c in chosen if classes[c.topic] is None})
        if unknown and topics:
            raise BagError(f'no installed message type for {", ".join(unknown)}; '
                           f'{contents(self._reader)}')
        if unknown:
            self.get_logger().warning(f'not playing {", ".join(unknown)}: their message '
                                      'packages are not installed')
        chosen = [c for c in chosen if classes[c.topic] is not None]
        if not chosen:
            raise BagError(f'nothing to play; {contents(self._reader)}')
        publishers = {}
        for connection in chosen:
            if connection.topic not in publishers:
                publishers[connection.topic] = self.create_publisher(
                    classes[connection.topic], connection.topic, qos.PLAYBACK,
                    qos_overriding_options=qos.overridable())
        return chosen, publishers

    def _play(self) -> None:
        try:
            self._play_all()
        except Exception as error:  # a damaged recording: end the node with an error
            self.get_logger().error(f'playback failed after {self.played} messages: {error}')
            self.failed = True
        self.done = True

    def _play_all(self) -> None:
        origin = self._origin()
        # /clock holds the first message's time while waiting, so that nodes with
        # use_sim_time have it before the first message arrives.
        held = lambda now: origin  # noqa: E731
        wanted = self._p['wait_for_subscribers']
        if wanted:
            self.get_logger().info(f'waiting for {wanted} subscribers on every played topic')
        while wanted and any(publisher.get_subscription_count() < wanted
                             for publisher in self._topic_publishers.values()):
            if not self._wait_until(time.monotonic() + 0.05, held):
                return
        if not self._wait_until(time.monotonic() + self._p['delay'], held):
            return
        while not self._stop.is_set():
            self._play_once(origin)
            self.loops += 1
            if not self._p['loop']:
                break

    def _origin(self) -> int:
        """The recording time (ns) playback starts from."""
        return self._reader.start_time + round(self._p['start_offset'] * 1e9)

    def _play_once(self, origin: int) -> None:
        """One pass from start_offset to the end (or to a stop)."""
        rate = self._p['rate']
        start = time.monotonic()
        self._next_clock = start
        first = last = None
        count = 0
        recording_time = lambda now: origin + round((now - start) * rate * 1e9)  # noqa: E731
        for connection, stamp, data in self._reader.messages(self._connections, start=origin):
            if not self._wait_until(start + (stamp - origin) / 1e9 / rate, recording_time):
                return
            published = time.monotonic()
            # /clock just before each message: a node on sim time then sees the message's
            # age as its delivery time, not as up to a clock period of staleness.
            self._publish_clock(recording_time(published))
            self._topic_publishers[connection.topic].publish(bytes(data))
            first = first or (published, stamp)
            last = (published, stamp)
            count += 1
            self.played += 1
        if count > 1 and last[0] > first[0]:
            self.achieved_rate = (last[1] - first[1]) / 1e9 / (last[0] - first[0])
            self.get_logger().info(
                f'played {count} messages, {(last[1] - first[1]) / 1e9:.2f} s of recording in '
                f'{last[0] - first[0]:.2f} s: rate {self.achieved_rate:.3f} (asked {rate:g})')

    def _wait_until(self, due: float, recording_time) -> bool:
        """Sleep until `due` (monotonic s), publishing /clock on its period meanwhile.

        :param recording_time: monotonic s -> the recording time (ns) /clock shows then.
        :returns: False when playback is to stop.
        """
        while True:
            now = time.monotonic()
            if self._clock_pub is not None and now >= self._next_clock:
                self._publish_clock(recording_time(now))
                self._next_clock = now + 1.0 / self._p['clock']
            if now >= due:
                return not self._stop.is_set()
            timeout = due - now
            if self._clock_pub is not None:
                timeout = min(timeout, max(self._next_clock - now, 0.0))
            if self._stop.wait(timeout):
                return False

    def _publish_clock(self, stamp_ns: int) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=TimeMsg(sec=stamp_ns // 10**9,
                                                        nanosec=stamp_ns % 10**9)))

    def _report(self):
        values = {'messages_played': self.played, 'loops': self.loops,
                  'achieved_rate': self.achieved_rate}
        return (OK, 'ok', values) if self.played else (WARN, 'nothing played yet', values)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._reader.close()


def main(args=None):
    sys.exit(run_node(BagPlayer, args))


if __name__ == '__main__':
    main()
