"""`perception-rl run`: the main job, as a user starts it, leaves a complete run directory."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perception_rl.aux_losses import AuxLossConfig

pytestmark = pytest.mark.timeout(120)
BIN = Path(sys.executable).parent


def test_run_leaves_config_tensorboard_and_checkpoints(tmp_path):
    out = tmp_path / 'run'
    result = subprocess.run([str(BIN / 'perception-rl'), 'run', '--duration', '15',
                             '--out', str(out)], capture_output=True, text=True,
                            env=os.environ.copy(), timeout=100)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    config = yaml.safe_load((out / 'config.yaml').read_text())
    assert config['camera_node']['ros__parameters']['source'] == 'synthetic'
    assert config['perception_node']['ros__parameters']['aux_loss'] == AuxLossConfig.spec
    assert list((out / 'tensorboard').glob('events.out.tfevents.*'))
    assert list((out / 'checkpoints').glob('perception-*.safetensors'))
    assert list((out / 'checkpoints').glob('agent-*.safetensors'))
    assert 'frames' in result.stdout and 'train_steps' in result.stdout

    # The same run directory resumes: perception continues its train_steps.
    again = subprocess.run([str(BIN / 'perception-rl'), 'run', '--duration', '3',
                            '--out', str(out)], capture_output=True, text=True,
                           env=os.environ.copy(), timeout=100)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'resumed from' in again.stderr + again.stdout


def test_invalid_parameter_exits_non_zero_naming_it(tmp_path):
    params = tmp_path / 'bad.yaml'
    params.write_text(yaml.safe_dump(
        {'perception_node': {'ros__parameters': {'aux_loss': 'telepathy'}}}))
    result = subprocess.run([str(BIN / 'perception-rl'), 'run', '--duration', '2',
                             '--out', str(tmp_path / 'run'), '--params-file', str(params)],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=100)
    assert result.returncode == 2
    assert "'aux_loss'" in result.stderr and 'telepathy' in result.stderr
