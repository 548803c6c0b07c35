"""perception-rl bench: frames joined across the nodes' traces, and a short real run."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception_rl.realtime_analysis import NODES, analyse_frames
from perception_rl.realtime_bench import ProcSampler

BIN = Path(sys.executable).parent
MS = 1_000_000


def _traces(latencies_ms):
    """Traces of frames 50 ms apart; frame k's command arrives latencies_ms[k] after its
    stamp (None: perception never saw it)."""
    rows = {name: [] for name in NODES}
    received, features_seq = [], 0
    for k, latency in enumerate(latencies_ms):
        stamp = (1000 + 50 * k) * MS
        rows['camera_node'].append({'stamp_ns': stamp, 'tick_ns': stamp - MS,
                                    'publish_ns': stamp + MS, 'published_ns': stamp + 2 * MS})
        if latency is None:
            continue
        features_seq += 1
        rows['perception_node'].append({
            'stamp_ns': stamp, 'start_ns': stamp + 3 * MS, 'forward_ms': 2.0, 'train_ms': 4.0,
            'trained': 1.0, 'features_seq': features_seq, 'publish_ns': stamp + 9 * MS,
            'end_ns': stamp + 10 * MS})
        rows['agent_node'].append({
            'features_seq': features_seq, 'start_ns': stamp + 11 * MS, 'act_ms': 1.0,
            'updating': float(k % 2), 'cmd_seq': 100 + k, 'publish_ns': stamp + 12 * MS,
            'end_ns': stamp + 13 * MS})
        received.append((100 + k, 0.0, stamp + latency * MS))
    return rows, received


def test_frames_are_joined_by_stamp_and_sequence_numbers():
    latencies = [20, 20, 60, 20, None, 70, 20, 30]
    rows, received = _traces(latencies)
    result = analyse_frames(rows, received, 0, 10**12, rate=20.0)
    assert result['frames'] == 8 and result['answered'] == 7
    assert result['deadline_misses'] == 3  # 60 and 70 ms late, one never answered
    assert result['longest_miss_run'] == 2  # the unanswered frame, then the 70 ms one
    assert result['on_time_share'] == pytest.approx(5 / 8)
    stages = result['stages']
    assert stages['end_to_end_ms']['max'] == pytest.approx(70.0)
    assert stages['image_transport_ms']['p50'] == pytest.approx(2.0)  # publish to callback
    assert stages['perception_callback_ms']['p50'] == pytest.approx(7.0)
    assert stages['features_transport_ms']['p50'] == pytest.approx(2.0)
    assert stages['agent_callback_ms']['p50'] == pytest.approx(2.0)
    assert stages['agent_response_ms']['p50'] == pytest.approx(3.0)  # features -> command
    assert result['jitter_ms']['max'] == pytest.approx(0.0)
    assert result['jitter_ms']['count'] == 7
    assert result['jitter_during_update_ms']['count'] == 4  # the odd frames
    assert result['frames_during_update'] == 4


def test_cpu_and_memory_count_a_process_with_its_children_but_not_another_named_one():
    """agent_node's PPO update runs in a child process: its CPU is the node's, and the
    bench's own (whose children all nodes are) must not count it again."""
    busy_child = ('import subprocess, sys; subprocess.Popen([sys.executable, "-c", '
                  '"while True: pass"]).wait()')
    node = subprocess.Popen([sys.executable, '-c', busy_child])
    try:
        sampler = ProcSampler({'node': node.pid, 'observer': os.getpid()})
        time.sleep(1.0)  # the grandchild starts
        sampler.sample()
        time.sleep(1.5)
        sampler.sample()
        (t0, first), (t1, last) = sampler.samples
        node_cpu = last['node'][0] - first['node'][0]
        observer_cpu = last['observer'][0] - first['observer'][0]
        assert node_cpu > 0.1, 'the busy grandchild was not counted'
        assert observer_cpu < node_cpu / 2, 'the named child was counted under its parent too'
        assert last['node'][1] > 10.0  # two interpreters' RSS, MiB
    finally:
        subprocess.run(['pkill', '-P', str(node.pid)], check=False)
        node.kill()
        node.wait()


def test_bench_writes_every_figure(tmp_path):
    """A short real run at a small resolution: every figure is there and sane (the budgets'
    timings are the benchmark's business, not the suite's)."""
    out = tmp_path / 'bench'
    result = subprocess.run(
        [str(BIN / 'perception-rl'), 'bench', '--width', '160', '--height', '120',
         '--seconds', '4', '--warmup', '1', '--floor-seconds', '2', '--rollout-length', '16',
         '--out', str(out)], capture_output=True, text=True, env=os.environ.copy(), timeout=240)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    data = json.loads((out / 'bench.json').read_text())
    assert (out / 'bench.png').stat().st_size > 10_000
    assert '| end_to_end |' in (out / 'table.md').read_text()
    assert 'reproduce: perception-rl bench --width 160 --height 120' in result.stdout
    assert data['environment']['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert data['environment']['ROS_DOMAIN_ID'] != os.environ['ROS_DOMAIN_ID']

    pipeline, floor = data['pipeline'], data['floor']
    assert pipeline['exit_codes'] == dict.fromkeys(NODES, 0), result.stdout[-3000:]
    assert pipeline['exited_during_run'] == []
    assert 60 <= pipeline['frames'] <= 100  # 4 s at 20 Hz
    assert 0 < pipeline['answered'] <= pipeline['frames']
    assert 0.0 <= pipeline['on_time_share'] <= pipeline['answered_share'] <= 1.0
    assert 0 < floor['answered'] <= floor['frames']
    for name, stage in [*pipeline['stages'].items(), ('floor', floor['end_to_end_ms'])]:
        assert stage['count'] > 0, name
        assert 0.0 <= stage['p50'] <= stage['p99'] <= stage['max'] < 10_000.0, (name, stage)
    stages = pipeline['stages']
    # End to end holds every stage of the frame's way.
    assert stages['end_to_end_ms']['p50'] > stages['perception_callback_ms']['p50']
    assert stages['perception_callback_ms']['p50'] >= stages['perception_forward_ms']['p50']
    assert pipeline['jitter_during_update_ms']['count'] == pipeline['frames_during_update']
    assert pipeline['jitter_ms']['count'] == pipeline['stages']['agent_response_ms']['count']
    assert set(NODES) <= set(pipeline['cpu_cores'])
    assert all(0.0 < pipeline['cpu_cores'][n] < 2.0 for n in NODES)
    memory = pipeline['memory']
    assert all(len(memory['series_mib'][n]) >= 4 for n in NODES)
    assert 100.0 < memory['nodes_start_mib'] < 10_000.0
    assert math.isfinite(memory['nodes_growth_mib'])
    assert len(pipeline['machine']['loadavg_start']) == 3
    assert len(data['budgets']) == 9
    assert all(isinstance(b['passed'], bool) for b in data['budgets'])
    assert data['passed'] == (result.returncode == 0)
    for budget in data['budgets']:
        assert f"{'PASS' if budget['passed'] else 'FAIL'}  {budget['budget']}" in result.stdout
