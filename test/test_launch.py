"""launch_testing of launch/perception_rl.launch.py (needs a ROS 2 install with launch_testing).

launch, launch_ros and launch_testing are not published on PyPI, so without a ROS install
this module is skipped, with that reason; test_launch_consistency.py checks the launch file
statically everywhere.
"""
import os
import unittest

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed (it comes with a ROS 2 install, '
                             'not from PyPI)')
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = os.path.join(os.path.dirname(__file__), '..', 'launch', 'perception_rl.launch.py')


@pytest.mark.launch_test
def generate_test_description():
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(PythonLaunchDescriptionSource(LAUNCH_FILE)),
        launch_testing.actions.ReadyToTest(),
    ])


class TestLoopRuns(unittest.TestCase):

    def test_features_and_commands_flow(self):
        import rclpy
        from geometry_msgs.msg import Twist
        from std_msgs.msg import Float32MultiArray
        rclpy.init()
        node = rclpy.create_node('launch_test_listener')
        got = {'features': 0, 'cmd_vel': 0}
        node.create_subscription(Float32MultiArray, 'features',
                                 lambda m: got.__setitem__('features', got['features'] + 1), 10)
        node.create_subscription(Twist, 'cmd_vel',
                                 lambda m: got.__setitem__('cmd_vel', got['cmd_vel'] + 1), 10)
        try:
            end = node.get_clock().now().nanoseconds + 60e9
            while node.get_clock().now().nanoseconds < end and min(got.values()) < 40:
                rclpy.spin_once(node, timeout_sec=0.1)
        finally:
            node.destroy_node()
            rclpy.shutdown()
        self.assertGreaterEqual(got['features'], 40)
        self.assertGreaterEqual(got['cmd_vel'], 40)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
