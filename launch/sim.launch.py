"""A simulated robot: sim_env_node, perception and agent.

    ros2 launch perception_rl sim.launch.py env_id:=perception_rl/Foveation-v1 mode:=lockstep

focus_reward:=detail has the focus head learn where to look from the detail the fovea sees
(perception publishes it on fovea_detail); give the foveation tasks a params_file with
perception_node's fovea_stream: pooled, reconstruction_fovea: 1.0 and frozen_conv_layers: 3,
as the learning benchmark does (docs/learning_benchmark.md).

The frame size, fovea size and discrete action count must match the environment: the
defaults fit perception_rl/Foveation-v1 (256x192 frames, 2 actions); MiniGrid's view is
56x56 with 7 actions; discrete_actions:=0 for an environment with continuous actions.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from perception_rl.dds_config import profile_environment


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory('perception_rl'), 'config', 'perception_rl.yaml')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    common = [params_file, {'use_sim_time': ParameterValue(use_sim_time, value_type=bool)}]
    width = ParameterValue(LaunchConfiguration('image_width'), value_type=int)
    height = ParameterValue(LaunchConfiguration('image_height'), value_type=int)
    roi = ParameterValue(LaunchConfiguration('roi_size'), value_type=int)
    focus_reward = LaunchConfiguration('focus_reward')
    # The shipped Fast DDS profile (shared memory for large frames; UDP on loopback only when
    # ROS_AUTOMATIC_DISCOVERY_RANGE is LOCALHOST), unless the user has set a profile.
    dds = [SetEnvironmentVariable(name, value) for name, value in profile_environment().items()]
    return LaunchDescription(dds + [
        DeclareLaunchArgument('env_id', default_value='perception_rl/Foveation-v1',
                              description='Gymnasium id of the simulated robot'),
        DeclareLaunchArgument('mode', default_value='lockstep',
                              description='realtime (rate Hz) or lockstep (a step per command)'),
        DeclareLaunchArgument('discrete_actions', default_value='2',
                              description="The environment's discrete actions (0: continuous)"),
        DeclareLaunchArgument('image_width', default_value='256',
                              description="Width of the environment's frames"),
        DeclareLaunchArgument('image_height', default_value='192',
                              description="Height of the environment's frames"),
        DeclareLaunchArgument('roi_size', default_value='48',
                              description='Side of the fovea region in pixels'),
        DeclareLaunchArgument('focus_reward', default_value='task',
                              description="What the focus head learns from: 'task', or "
                                          "'detail' (perception then publishes fovea_detail)"),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='Parameter YAML with a block per node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock'),
        Node(package='perception_rl', executable='sim_env_node', name='sim_env_node',
             output='screen',
             parameters=common + [{
                 'env_id': ParameterValue(LaunchConfiguration('env_id'), value_type=str),
                 'mode': ParameterValue(LaunchConfiguration('mode'), value_type=str)}]),
        Node(package='perception_rl', executable='perception_node', name='perception_node',
             output='screen',
             parameters=common + [{'publish_fovea_detail': ParameterValue(
                 PythonExpression(["'", focus_reward, "' == 'detail'"]), value_type=bool)}]),
        Node(package='perception_rl', executable='agent_node', name='agent_node',
             output='screen',
             parameters=common + [{
                 'discrete_actions': ParameterValue(LaunchConfiguration('discrete_actions'),
                                                    value_type=int),
                 'image_width': width, 'image_height': height,
                 'roi_width': roi, 'roi_height': roi,
                 'focus_reward': ParameterValue(focus_reward, value_type=str)}]),
    ])
