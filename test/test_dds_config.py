"""What the shipped Fast DDS profiles allow, and when the nodes get them."""
import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from perception_rl.dds_config import (LOCALHOST_PROFILE, NETWORK_PROFILE, profile_environment,
                                      profile_file)

ROOT = Path(__file__).resolve().parents[1]
NS = {'dds': 'http://www.eprosima.com'}
FRAME_BYTES = 640 * 480 * 3
"""One 640x480 bgr8 frame, the default camera's."""


def _profile(name: str):
    """(transports by id, the default participant's rtps element) of a shipped profile."""
    root = ET.parse(ROOT / 'config' / name).getroot()
    transports = {t.findtext('dds:transport_id', namespaces=NS): t
                  for t in root.iterfind('.//dds:transport_descriptor', NS)}
    participants = [p for p in root.iterfind('.//dds:participant', NS)
                    if p.get('is_default_profile') == 'true']
    assert len(participants) == 1
    return transports, participants[0].find('dds:rtps', NS)


@pytest.mark.parametrize('name', [LOCALHOST_PROFILE, NETWORK_PROFILE])
def test_profiles_carry_frames_over_shared_memory_and_nothing_builtin(name):
    transports, rtps = _profile(name)
    assert rtps.findtext('dds:useBuiltinTransports', namespaces=NS) == 'false'
    used = [t.text for t in rtps.iterfind('dds:userTransports/dds:transport_id', NS)]
    assert set(used) == set(transports)
    kinds = sorted(transports[t].findtext('dds:type', namespaces=NS) for t in used)
    assert kinds == ['SHM', 'UDPv4']
    shm = next(t for t in transports.values() if t.findtext('dds:type', namespaces=NS) == 'SHM')
    # Several frames in flight must fit: the default 0.5 MB segment holds none of them.
    assert int(shm.findtext('dds:segment_size', namespaces=NS)) >= 8 * FRAME_BYTES


def test_localhost_profile_allows_udp_on_loopback_only():
    transports, _ = _profile(LOCALHOST_PROFILE)
    for transport in transports.values():
        if transport.findtext('dds:type', namespaces=NS) != 'UDPv4':
            continue
        allowed = [a.text for a in transport.iterfind('dds:interfaceWhiteList/*', NS)]
        assert allowed == ['127.0.0.1']
        assert transport.find('dds:interfaces', NS) is None  # no second list to widen it


def test_localhost_range_gets_the_loopback_profile():
    env = {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    assert profile_environment(env) == {
        'FASTDDS_DEFAULT_PROFILES_FILE': str(profile_file(localhost=True))}
    assert profile_file(localhost=True).name == LOCALHOST_PROFILE
    assert profile_environment({})['FASTDDS_DEFAULT_PROFILES_FILE'].endswith(NETWORK_PROFILE)
    # Fast DDS 2 (Humble, Jazzy) reads the older variable.
    assert list(profile_environment({**env, 'ROS_DISTRO': 'jazzy'})) == [
        'FASTRTPS_DEFAULT_PROFILES_FILE']


def test_a_users_own_profile_or_another_dds_is_left_alone():
    assert profile_environment({'FASTRTPS_DEFAULT_PROFILES_FILE': '/mine.xml'}) == {}
    assert profile_environment({'FASTDDS_DEFAULT_PROFILES_FILE': '/mine.xml'}) == {}
    assert profile_environment({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) == {}


def test_the_suite_runs_the_nodes_with_the_shipped_profile():
    import os
    assert os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] == str(profile_file(localhost=True))


def test_profiles_are_installed_and_used_by_the_launch_files_and_the_main_job():
    setup = (ROOT / 'setup.py').read_text()
    assert "glob('config/*.xml')" in setup
    for launch_file in (ROOT / 'launch').glob('*.launch.py'):
        tree = ast.parse(launch_file.read_text())
        calls = {getattr(c.func, 'id', None) for c in ast.walk(tree) if isinstance(c, ast.Call)}
        assert {'profile_environment', 'SetEnvironmentVariable'} <= calls, launch_file.name
    assert 'profile_environment()' in (ROOT / 'perception_rl' / 'run_job.py').read_text()
