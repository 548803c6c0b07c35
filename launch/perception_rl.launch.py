"""Camera, perception and agent: `ros2 launch perception_rl perception_rl.launch.py`."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from perception_rl.dds_config import profile_environment


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory('perception_rl'), 'config', 'perception_rl.yaml')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    common = [params_file, {'use_sim_time': ParameterValue(use_sim_time, value_type=bool)}]
    # The shipped Fast DDS profile (shared memory for large frames; UDP on loopback only when
    # ROS_AUTOMATIC_DISCOVERY_RANGE is LOCALHOST), unless the user has set a profile.
    dds = [SetEnvironmentVariable(name, value) for name, value in profile_environment().items()]
    return LaunchDescription(dds + [
        DeclareLaunchArgument('source', default_value='synthetic',
                              description="'synthetic', a device index, a device path or a "
                                          'video file'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='Parameter YAML with a block per node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay)'),
        Node(package='perception_rl', executable='camera_node', name='camera_node',
             output='screen',
             # A string even when it looks like a number: '0' is a device index.
             parameters=common + [{'source': ParameterValue(LaunchConfiguration('source'),
                                                            value_type=str)}]),
        Node(package='perception_rl', executable='perception_node', name='perception_node',
             output='screen', parameters=common),
        Node(package='perception_rl', executable='agent_node', name='agent_node',
             output='screen', parameters=common),
    ])
