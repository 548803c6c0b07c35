"""Learning from a recording: `ros2 bag play --clock`, then perception and the agent on its
time, the agent publishing no motor commands (a robot listening on cmd_vel stays still).

    ros2 launch perception_rl replay.launch.py bag_path:=/path/to/bag [rate:=2.0] [loop:=true]
        [image_topic:=/camera/image_raw]

Perception takes `image_topic` or its `/compressed` stream. A recorded cmd_vel is played too,
and perception conditions on it as on a live one. Without a ROS install, play the bag with
`bag_player` (same options as parameters) and start the two nodes with use_sim_time:=true.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from perception_rl.dds_config import profile_environment


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory('perception_rl'), 'config', 'perception_rl.yaml')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    image_topic = LaunchConfiguration('image_topic')
    loop = LaunchConfiguration('loop')
    common = [params_file, {'use_sim_time': ParameterValue(use_sim_time, value_type=bool)}]
    play = ['ros2', 'bag', 'play', LaunchConfiguration('bag_path'), '--clock',
            '--rate', LaunchConfiguration('rate'),
            '--start-offset', LaunchConfiguration('start_offset')]
    # The shipped Fast DDS profile, for the player as for the nodes
    dds = [SetEnvironmentVariable(name, value) for name, value in profile_environment().items()]
    return LaunchDescription(dds + [
        DeclareLaunchArgument('bag_path', description='The recording (a rosbag2 directory or '
                                                      'file)'),
        DeclareLaunchArgument('rate', default_value='1.0', description='Playback speed'),
        DeclareLaunchArgument('loop', default_value='false',
                              description='Play the recording again and again'),
        DeclareLaunchArgument('start_offset', default_value='0.0',
                              description='Seconds into the recording to start from'),
        DeclareLaunchArgument('image_topic', default_value='image_raw',
                              description='The Image topic in the recording (its /compressed '
                                          'stream is taken too)'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='Parameter YAML with a block per node'),
        DeclareLaunchArgument('use_sim_time', default_value='true',
                              description='Follow the recording time on /clock'),
        ExecuteProcess(cmd=play, output='screen', condition=UnlessCondition(loop)),
        ExecuteProcess(cmd=play + ['--loop'], output='screen', condition=IfCondition(loop)),
        Node(package='perception_rl', executable='perception_node', name='perception_node',
             output='screen', parameters=common,
             remappings=[('image_raw', image_topic),
                         ('image_raw/compressed', [image_topic, '/compressed'])]),
        Node(package='perception_rl', executable='agent_node', name='agent_node',
             output='screen', parameters=common + [{'publish_commands': False}]),
    ])
