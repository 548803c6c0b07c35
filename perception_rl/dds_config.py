"""How the nodes' DDS is set up: the shipped Fast DDS profile, and a ROS domain of one's own.

The profiles live in config/ and are installed to share/perception_rl/config (setup.py):
`fastdds_localhost.xml` (shared memory sized for 640x480 frames, UDP on loopback only) when
ROS_AUTOMATIC_DISCOVERY_RANGE is LOCALHOST, `fastdds.xml` (the same shared memory, UDP on
every interface) otherwise. The main job, the launch files, `perception-rl bench` and the test
suite apply them through `profile_environment`.
"""
import fcntl
import os
import sys
from pathlib import Path
from typing import Mapping

PACKAGE = 'perception_rl'
LOCALHOST_PROFILE = 'fastdds_localhost.xml'
NETWORK_PROFILE = 'fastdds.xml'
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
"""Fast DDS 3 (ROS 2 Kilted, and the PyPI wheels) reads the first; Fast DDS 2 (Humble, Jazzy)
the second, which Fast DDS 3 still reads with a deprecation warning."""
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')
_held_locks = []


def config_directory() -> Path:
    """The package's installed config directory: from the ament index on a ROS install, from
    the Python prefix after a pip install, or the source tree's in an editable checkout."""
    candidates = []
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / 'config')
        except (PackageNotFoundError, OSError):  # not installed there, or no ament index
            pass
    except ImportError:
        pass
    candidates += [Path(sys.prefix) / 'share' / PACKAGE / 'config',
                   Path(__file__).resolve().parents[1] / 'config']
    for directory in candidates:
        if (directory / LOCALHOST_PROFILE).is_file():
            return directory
    raise FileNotFoundError(f'{LOCALHOST_PROFILE} not found in any of '
                            f'{[str(c) for c in candidates]}')


def profile_file(localhost: bool) -> Path:
    """The shipped Fast DDS profile for DDS held to this machine, or for a network."""
    return config_directory() / (LOCALHOST_PROFILE if localhost else NETWORK_PROFILE)


def profile_environment(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment variables that give a node the shipped profile ({} where the user has
    chosen a profile of their own, or a DDS other than Fast DDS)."""
    if any(env.get(name) for name in PROFILE_VARIABLES):
        return {}
    if 'fastrtps' not in env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp'):
        return {}
    localhost = (env.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() == 'LOCALHOST'
                 or env.get('ROS_LOCALHOST_ONLY') == '1')
    path = str(profile_file(localhost))
    if env.get('ROS_DISTRO', '').lower() in FAST_DDS_2_DISTROS:
        return {'FASTRTPS_DEFAULT_PROFILES_FILE': path}
    return {'FASTDDS_DEFAULT_PROFILES_FILE': path}


def keep_dds_here(dds_profile: bool = True) -> dict[str, str]:
    """Set this process's environment, inherited by the nodes it starts: discovery on this
    machine only, a ROS domain no other run holds, and the shipped profile (or, with
    `dds_profile` false, Fast DDS's builtin transports). The variables as set."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(reserve_domain_id())
    os.environ.pop('ROS_STATIC_PEERS', None)
    for name in PROFILE_VARIABLES:
        os.environ.pop(name, None)
    if dds_profile:
        os.environ.update(profile_environment())
    return {name: os.environ.get(name, '') for name in
            ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', *PROFILE_VARIABLES)}


def reserve_domain_id(first: int = 10, count: int = 90) -> int:
    """A ROS_DOMAIN_ID in [first, first + count) that no other run of the tests or the
    benchmark holds: an exclusive lock on a per-domain file, held until this process exits."""
    start = os.getpid() % count
    for offset in range(count):
        domain = first + (start + offset) % count
        handle = open(f'/tmp/perception_rl-test-domain-{domain}.lock', 'w')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_locks.append(handle)
        return domain
    raise RuntimeError(f'no free ROS_DOMAIN_ID in {first}..{first + count - 1}')
