"""Test-wide setup: DDS stays on this machine, on a ROS domain no other run uses.

Set here, in pytest_configure, before any test imports rclpy, and inherited by every node
process the tests start, so the suite does not depend on the caller's shell.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception_rl.dds_config import PROFILE_VARIABLES, profile_environment, reserve_domain_id

BIN = Path(sys.executable).parent
"""Where the package's console scripts are installed (the venv's bin)."""


def pytest_configure(config):
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(reserve_domain_id())
    os.environ.pop('ROS_STATIC_PEERS', None)
    # The nodes run with the profile users get by default (the shipped one), not the caller's.
    for name in PROFILE_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(profile_environment())


@pytest.fixture
def ros_context():
    """An initialised rclpy context for the test process itself, shut down afterwards."""
    import rclpy
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


class NodeProcess:
    """One of the package's executables running as its own OS process."""

    def __init__(self, executable: str, params: dict | None = None, log_dir: Path = None):
        args = [str(BIN / executable)]
        if params:
            args.append('--ros-args')
            for name, value in params.items():
                args += ['-p', f'{name}:={value}']
        self.log = open(log_dir / f'{executable}.log', 'w+') if log_dir else subprocess.DEVNULL
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=os.environ.copy())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        """Send `sig` and wait for the exit code (killed, -9, if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def start_node(tmp_path):
    """start_node(executable, params) -> NodeProcess; every process is stopped afterwards."""
    started = []

    def start(executable: str, params: dict | None = None) -> NodeProcess:
        node = NodeProcess(executable, params, tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop(signal.SIGKILL if node.process.poll() is None else signal.SIGINT, 5.0)


@pytest.fixture
def spin():
    """spin(node, seconds, until=None): spin a test node; True once `until()` holds."""
    return _spin_for


def _spin_for(node, seconds: float, until=None) -> bool:
    """Spin `node` for up to `seconds`; stop early (and return True) once `until()` holds."""
    import rclpy
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if until is not None and until():
                return True
    finally:
        executor.remove_node(node)
    return until is None


def assert_save_abandons_the_update(agent, directory: Path, before: dict, within_s: float):
    """`agent` is in the middle of a long PPO update; `before` its policy weights from before
    it. Saving with a short timeout abandons the update on purpose, soon, and writes the
    weights from before it."""
    import torch

    from perception_rl.checkpoint import load_latest
    from perception_rl.ppo import UpdateAbandoned
    start = time.monotonic()
    path = agent.save(directory, timeout=0.5)
    assert time.monotonic() - start < within_s
    assert isinstance(agent.last_error, UpdateAbandoned), agent.last_error
    assert agent.learner.last_good.restores == 0  # stopped on purpose, nothing went bad
    loaded, _ = load_latest(directory, 'agent')
    assert loaded.path == path and loaded.metadata['updates'] == 0
    for key, value in before.items():
        assert torch.equal(loaded.tensors[f'policy.{key}'], value), key
