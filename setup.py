from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'perception_rl'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        # config: the parameter YAML and the Fast DDS profiles (perception_rl/dds_config.py)
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    python_requires='>=3.10',
    # rclpy and the message packages are not listed: in a ROS workspace they come from the ROS
    # install, and a second copy from PyPI would shadow it. Without ROS, the `ros` extra (or
    # scripts/setup_venv.sh) installs them as PyPI wheels.
    install_requires=[
        'numpy',
        'opencv-python-headless',
        'torch',  # install torch==2.13.0 first on CPU-only machines (README)
        'safetensors',
        'pyyaml',
        'tensorboard',
        'matplotlib',  # learning curves
        'gymnasium',  # perception-rl train: simulated tasks
        'minigrid',
        'ale-py',  # Atari, its ROMs included
    ],
    extras_require={
        'ros': [
            'ros-rclpy', 'ros-std-msgs', 'ros-sensor-msgs', 'ros-geometry-msgs',
            'ros-diagnostic-msgs', 'ros-rosgraph-msgs', 'ros-rmw-fastrtps-cpp',
            'rosbags',  # rosbag2 reading and writing without rosbag2_py (bag_player, pretrain)
        ],
        'test': ['pytest', 'pytest-timeout', 'hypothesis'],
        'bench': ['stable-baselines3'],  # the end-to-end baseline of perception-rl learning-bench
    },
    zip_safe=True,
    maintainer='perception_rl developers',
    maintainer_email='perception_rl@example.com',
    description='A robot that learns to see while it acts, over ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            f'camera_node = {PACKAGE}.camera_node:main',
            f'perception_node = {PACKAGE}.perception_node:main',
            f'agent_node = {PACKAGE}.agent_node:main',
            f'sim_env_node = {PACKAGE}.sim_env_node:main',
            f'bag_player = {PACKAGE}.bag_player:main',
            f'bag_recorder = {PACKAGE}.bag_recorder:main',
            f'perception-rl = {PACKAGE}.cli:main',
        ],
    },
)
