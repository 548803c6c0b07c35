"""Running nodes until SIGINT or SIGTERM, then shutting them down cleanly.

This departs from the demos' `rclpy.spin()` on purpose: rclpy's own signal handler shuts the
context down at once, after which a node can no longer publish its last zero command or
save a checkpoint. Here the signal only sets a flag; the spin loop notices it within 0.1 s,
each node's `shutdown()` runs while the context is alive, and then rclpy shuts down.
"""
import signal
import threading
import time
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from perception_rl.frame_sources import SourceError
from perception_rl.node_params import ParameterError


class StopSignals:
    """While in effect, SIGINT and SIGTERM only set `stop` (no KeyboardInterrupt part-way
    through building or shutting down a node)."""

    def __init__(self):
        self.stop = threading.Event()
        self._previous = {}

    def __enter__(self) -> threading.Event:
        self._previous = {sig: signal.signal(sig, lambda *_: self.stop.set())
                          for sig in (signal.SIGINT, signal.SIGTERM)}
        return self.stop

    def __exit__(self, *_) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def spin_until_stopped(nodes: list[Node], duration: float | None = None,
                       every_second: Callable[[], None] | None = None,
                       stop: threading.Event | None = None) -> None:
    """Spin the nodes on one executor until a signal, `duration` seconds, rclpy shutdown, or
    a node that sets its `done` attribute (bag_player at the end of its recording).

    Then each node's `shutdown()` (where it has one) runs, last node first. `stop`: the flag
    of the caller's StopSignals, set already if a signal came while the nodes were built.
    """
    if stop is None:
        with StopSignals() as stop:
            return spin_until_stopped(nodes, duration, every_second, stop)
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    start = last_report = time.monotonic()
    try:
        while (rclpy.ok() and not stop.is_set()
               and not any(getattr(node, 'done', False) for node in nodes)):
            executor.spin_once(timeout_sec=0.1)
            now = time.monotonic()
            if every_second is not None and now - last_report >= 1.0:
                last_report = now
                every_second()
            if duration is not None and now - start >= duration:
                break
    except ExternalShutdownException:
        pass
    finally:
        # Downstream first: the agent's zero command must not wait for perception's
        # checkpoint to reach the disk.
        for node in reversed(nodes):
            shutdown = getattr(node, 'shutdown', None)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception as error:  # one node's failure must not skip the others
                    node.get_logger().error(f'shutdown failed: {error}')
        for node in nodes:
            executor.remove_node(node)


def run_node(make_node: Callable[[], Node], args=None) -> int:
    """main() of one node: build it, spin it until a signal, shut it down; the exit code
    (1 when the node ended by setting its `failed` attribute)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    with StopSignals() as stop:  # a signal while the node is built: it shuts down at once
        try:
            node = make_node()
        except (ParameterError, SourceError) as error:
            rclpy.logging.get_logger('perception_rl').fatal(str(error))
            rclpy.try_shutdown()
            return 2
        try:
            spin_until_stopped([node], stop=stop)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    return 1 if getattr(node, 'failed', False) else 0
