"""The launch file, setup.py and the parameter YAML agree with the nodes (runs everywhere)."""
import ast
import re
from pathlib import Path

import yaml

from perception_rl import (agent_node, bag_player, bag_recorder, camera_node, perception_node,
                           sim_env_node)

ROOT = Path(__file__).resolve().parents[1]
NODE_PARAMETERS = {'camera_node': camera_node.PARAMETERS,
                   'perception_node': perception_node.PARAMETERS,
                   'agent_node': agent_node.PARAMETERS,
                   'sim_env_node': sim_env_node.PARAMETERS,
                   'bag_player': bag_player.PARAMETERS,
                   'bag_recorder': bag_recorder.PARAMETERS}
LAUNCH_FILES = {'perception_rl.launch.py': {'camera_node', 'perception_node', 'agent_node'},
                'sim.launch.py': {'sim_env_node', 'perception_node', 'agent_node'},
                'replay.launch.py': {'perception_node', 'agent_node'}}


def _launch_nodes(launch_file: str) -> list[dict]:
    """package/executable/name keyword arguments of every Node(...) in a launch file."""
    tree = ast.parse((ROOT / 'launch' / launch_file).read_text())
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'Node':
            nodes.append({k.arg: k.value.value for k in call.keywords
                          if isinstance(k.value, ast.Constant)})
    return nodes


def _console_scripts() -> set[str]:
    setup = (ROOT / 'setup.py').read_text()
    return set(re.findall(r"f?'([\w-]+) = \{PACKAGE\}\.", setup))


def test_launch_executables_are_console_scripts():
    assert set(LAUNCH_FILES) == {p.name for p in (ROOT / 'launch').glob('*.launch.py')}
    for launch_file, executables in LAUNCH_FILES.items():
        nodes = _launch_nodes(launch_file)
        assert {n['executable'] for n in nodes} == executables
        assert executables <= _console_scripts()
        assert all(n['package'] == 'perception_rl' and n['name'] == n['executable']
                   for n in nodes)


def test_config_blocks_are_the_nodes_and_every_value_is_valid():
    config = yaml.safe_load((ROOT / 'config' / 'perception_rl.yaml').read_text())
    assert set(config) == set(NODE_PARAMETERS)
    for node, specs in NODE_PARAMETERS.items():
        by_name = {spec.name: spec for spec in specs}
        values = config[node]['ros__parameters']
        assert set(values) <= set(by_name), f'{node}: undeclared {set(values) - set(by_name)}'
        for name, value in values.items():
            by_name[name].coerce(value)  # raises ParameterError naming the parameter


def test_launch_arguments_match_the_issue_contract():
    text = (ROOT / 'launch' / 'perception_rl.launch.py').read_text()
    for argument in ('source', 'params_file', 'use_sim_time'):
        assert f"DeclareLaunchArgument('{argument}'" in text
    text = (ROOT / 'launch' / 'sim.launch.py').read_text()
    for argument in ('env_id', 'mode', 'discrete_actions', 'params_file', 'use_sim_time'):
        assert f"DeclareLaunchArgument('{argument}'" in text
    text = (ROOT / 'launch' / 'replay.launch.py').read_text()
    for argument in ('bag_path', 'rate', 'loop', 'start_offset', 'image_topic', 'params_file',
                     'use_sim_time'):
        assert f"DeclareLaunchArgument('{argument}'" in text


def test_replay_plays_with_clock_on_sim_time_and_commands_off():
    """ros2 bag play publishes /clock, the nodes follow it, and the agent commands nothing."""
    tree = ast.parse((ROOT / 'launch' / 'replay.launch.py').read_text())
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert {'ros2', 'bag', 'play', '--clock', '--loop'} <= constants
    settings = {(k.value, v.value) for d in ast.walk(tree) if isinstance(d, ast.Dict)
                for k, v in zip(d.keys, d.values)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
    assert ('publish_commands', False) in settings
    assert 'publish_commands' in {spec.name for spec in agent_node.PARAMETERS}
    default = re.search(r"DeclareLaunchArgument\('use_sim_time', default_value='(\w+)'",
                        (ROOT / 'launch' / 'replay.launch.py').read_text())
    assert default and default.group(1) == 'true'


def test_data_files_install_launch_and_config():
    setup = (ROOT / 'setup.py').read_text()
    assert "glob('launch/*.launch.py')" in setup and "glob('config/*.yaml')" in setup
    assert (ROOT / 'resource' / 'perception_rl').exists()
