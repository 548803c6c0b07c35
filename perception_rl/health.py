"""Health of a node on /diagnostics, once a second (diagnostic_updater is not on PyPI)."""
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

HealthReport = tuple[int, str, dict[str, object]]
"""(level, message, values) of one status."""


class HealthPublisher:
    """Publishes `<node name>: health` with the values a callback reports."""

    def __init__(self, node: Node, report: Callable[[], HealthReport], period: float = 1.0,
                 hardware_id: str = ''):
        self._node, self._report, self._hardware_id = node, report, hardware_id
        self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        level, message, values = self._report()
        status = DiagnosticStatus(
            level=level, name=f'{self._node.get_name()}: health', message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=_text(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)


def _text(value: object) -> str:
    return f'{value:.4g}' if isinstance(value, float) else str(value)
