#!/usr/bin/env python3
"""Soak test: camera_node -> perception_node -> agent_node as real processes for a long time.

Samples the message rates (as a subscriber in this process) and each node's resident memory
and CPU time from /proc every --sample seconds, then stops the nodes with SIGINT and writes
a JSON file and a summary. Not part of the test suite: it takes 10 minutes by default.

    .venv/bin/python scripts/soak.py [--duration 600] [--source synthetic] [--out FILE]

DDS stays on this machine: the nodes and this process run with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, the shipped Fast DDS profile, and a ROS_DOMAIN_ID of
their own (--domain-id, default one that no test run or bench holds: the same lock files).
"""
import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent
TOPICS = ('image_raw', 'features', 'cmd_vel', 'focus_roi')
NODES = ('camera_node', 'perception_node', 'agent_node')


def _proc_sample(pid: int) -> tuple[float, float]:
    """(resident memory in MiB, CPU seconds used so far) of a process, from /proc."""
    with open(f'/proc/{pid}/status') as handle:
        rss_kb = next(int(line.split()[1]) for line in handle if line.startswith('VmRSS:'))
    with open(f'/proc/{pid}/stat') as handle:
        fields = handle.read().rsplit(')', 1)[1].split()
    ticks = os.sysconf('SC_CLK_TCK')
    return rss_kb / 1024.0, (int(fields[11]) + int(fields[12])) / ticks


def _slope_per_hour(times: list[float], values: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    t, v = [x / 3600.0 for x in times], values
    mt, mv = sum(t) / len(t), sum(v) / len(v)
    den = sum((x - mt) ** 2 for x in t)
    return sum((x - mt) * (y - mv) for x, y in zip(t, v)) / den if den else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--duration', type=float, default=600.0, help='seconds (default 600)')
    parser.add_argument('--warmup', type=float, default=60.0,
                        help='seconds left out of the summary (start-up, first allocations)')
    parser.add_argument('--sample', type=float, default=10.0, help='seconds between samples')
    parser.add_argument('--source', default='synthetic', help="camera_node's source")
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID (default: one no test run or bench holds)')
    parser.add_argument('--out', default=None, help='JSON file (default runs/soak-<time>.json)')
    args = parser.parse_args()

    from perception_rl.dds_config import PROFILE_VARIABLES, profile_environment, reserve_domain_id
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(args.domain_id if args.domain_id is not None
                                      else reserve_domain_id())
    os.environ.pop('ROS_STATIC_PEERS', None)
    for name in PROFILE_VARIABLES:  # the nodes run with the shipped profile, as users get it
        os.environ.pop(name, None)
    os.environ.update(profile_environment())
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import Float32MultiArray

    out = Path(args.out or time.strftime('runs/soak-%Y%m%d-%H%M%S.json'))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix='soak-'))
    learner = ['-p', f'checkpoint_dir:={work / "checkpoints"}', '-p', 'checkpoint_period:=60.0']
    commands = {'camera_node': ['-p', f'source:={args.source}'],
                'perception_node': learner, 'agent_node': learner}
    processes, logs = {}, {}
    for name in NODES:
        logs[name] = open(work / f'{name}.log', 'w+')
        processes[name] = subprocess.Popen([str(BIN / name), '--ros-args', *commands[name]],
                                           stdout=logs[name], stderr=subprocess.STDOUT)

    rclpy.init()
    node = rclpy.create_node('soak_sampler')
    counts: Counter = Counter()
    diagnostics: dict[str, dict[str, str]] = {}
    # Images are counted without being deserialised (raw), to keep this process light.
    node.create_subscription(Image, 'image_raw', lambda _: counts.update(['image_raw']), 10,
                             raw=True)
    for topic, kind in (('features', Float32MultiArray), ('cmd_vel', Twist),
                        ('focus_roi', RegionOfInterest)):
        node.create_subscription(kind, topic, lambda _, t=topic: counts.update([t]), 10)

    def on_diagnostics(msg):
        for status in msg.status:
            diagnostics[status.name.split(':')[0]] = {
                'level': int.from_bytes(status.level, 'little') if isinstance(
                    status.level, bytes) else int(status.level),
                **{kv.key: kv.value for kv in status.values}}
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    command = ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f'soak: {command}\n  domain {args.domain_id}, logs and checkpoints in {work}',
          flush=True)
    samples = []
    start = time.monotonic()
    last_cpu = {name: (start, 0.0) for name in NODES}
    next_sample = start + args.sample
    stopped_early = None
    try:
        while time.monotonic() - start < args.duration:
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now < next_sample:
                continue
            window = now - (next_sample - args.sample)
            next_sample += args.sample
            dead = [n for n, p in processes.items() if p.poll() is not None]
            if dead:
                stopped_early = f'{dead} exited early at {now - start:.0f} s'
                break
            sample = {'t': round(now - start, 1),
                      'rate_hz': {t: round(counts[t] / window, 2) for t in TOPICS},
                      'rss_mib': {}, 'cpu_pct': {}}
            counts.clear()
            for name, process in processes.items():
                rss, cpu = _proc_sample(process.pid)
                then, cpu_then = last_cpu[name]
                sample['rss_mib'][name] = round(rss, 1)
                sample['cpu_pct'][name] = round(100.0 * (cpu - cpu_then) / (now - then), 1)
                last_cpu[name] = (now, cpu)
            sample['perception_train_steps'] = diagnostics.get('perception_node', {}).get(
                'train_steps')
            sample['agent_updates'] = diagnostics.get('agent_node', {}).get('updates')
            samples.append(sample)
            print(f"  {sample['t']:7.0f} s  rates {sample['rate_hz']}  RSS MiB "
                  f"{sample['rss_mib']}  CPU % {sample['cpu_pct']}", flush=True)
    finally:
        codes = {}
        for name in reversed(NODES):  # downstream first, as a launch file's shutdown would
            process = processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                codes[name] = process.wait(15.0)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    steady = [s for s in samples if s['t'] >= args.warmup] or samples
    summary = {'exit_codes': codes, 'stopped_early': stopped_early,
               'tracebacks': {n: 'Traceback' in (logs[n].seek(0) or logs[n].read())
                              for n in NODES},
               'checkpoints': sorted(p.name for p in (work / 'checkpoints').glob('*')),
               'final_diagnostics': diagnostics}
    if steady:
        times = [s['t'] for s in steady]
        summary['rate_hz'] = {t: {'mean': round(sum(s['rate_hz'][t] for s in steady)
                                                / len(steady), 2),
                                  'min': min(s['rate_hz'][t] for s in steady)} for t in TOPICS}
        summary['rss_mib'] = {
            n: {'after_warmup': steady[0]['rss_mib'][n], 'end': steady[-1]['rss_mib'][n],
                'growth': round(steady[-1]['rss_mib'][n] - steady[0]['rss_mib'][n], 1),
                'slope_per_hour': round(_slope_per_hour(
                    times, [s['rss_mib'][n] for s in steady]), 1),
                'at_first_sample': samples[0]['rss_mib'][n]} for n in NODES}
        summary['cpu_pct_mean'] = {n: round(sum(s['cpu_pct'][n] for s in steady)
                                            / len(steady), 1) for n in NODES}
    result = {'command': command, 'duration_s': args.duration, 'warmup_s': args.warmup,
              'source': args.source, 'domain_id': args.domain_id, 'cpu_count': os.cpu_count(),
              'loadavg_at_end': os.getloadavg(), 'samples': samples, 'summary': summary}
    out.write_text(json.dumps(result, indent=1))
    print(f'\nsoak summary ({len(steady)} samples after {args.warmup:.0f} s warm-up; '
          f'load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):')
    for key in ('rate_hz', 'rss_mib', 'cpu_pct_mean', 'exit_codes', 'stopped_early',
                'tracebacks', 'checkpoints'):
        print(f'  {key}: {summary.get(key)}')
    print(f'written to {out}')
    ok = (stopped_early is None and all(c == 0 for c in codes.values())
          and not any(summary['tracebacks'].values()))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
