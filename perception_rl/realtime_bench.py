"""perception-rl bench: is every frame answered within the tick, against the bare transport?

Two phases in one run, each a graph of separate OS processes over the same DDS transport:

1. the floor (perception_rl/transport_floor.py): a source publishing frames of the camera's
   size and rate, two relays answering them with empty callbacks, the same topics' types and
   QoS;
2. the pipeline: camera_node (synthetic scene), perception_node and agent_node, each writing a
   per-frame trace (their `trace_file` parameter).

This process observes the Twists at the end of each graph (with their DDS sequence numbers),
samples CPU and RSS of every node from /proc, joins the traces frame by frame, checks the
budgets of issue 5 and writes bench.json and bench.png into --out.
"""
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from perception_rl.dds_config import PROFILE_VARIABLES, profile_environment, reserve_domain_id

NODES = ('camera_node', 'perception_node', 'agent_node')
START_TIMEOUT_S = 120.0
"""Longest wait for the first command (torch import and DDS discovery on a busy machine)."""
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_BYTES = os.sysconf('SC_PAGE_SIZE')
MEMORY_RUN_S = 600.0
"""The memory budget is stated for a run of this length."""


@dataclass
class BenchConfig:
    """One benchmark run."""

    width: int = 640
    """Frame width."""
    height: int = 480
    """Frame height."""
    rate: float = 20.0
    """Camera rate in Hz; its period is the deadline of each frame."""
    seconds: float = 60.0
    """Measured seconds of the pipeline, after warm-up."""
    warmup: float = 10.0
    """Seconds after the first command that are not measured."""
    floor_seconds: float = 20.0
    """Measured seconds of the bare-transport floor."""
    device: str = 'cpu'
    """Torch device of perception_node and agent_node: cpu, cuda or auto."""
    rollout_length: int = 256
    """agent_node's transitions per PPO update."""
    dds_profile: bool = True
    """Run with the shipped Fast DDS profile (False: Fast DDS's builtin transports)."""
    out: str = 'runs/realtime_bench'
    """Directory of bench.json, bench.png, the traces and the node logs."""

    def command(self) -> str:
        """The command line that reproduces this run."""
        args = ['perception-rl', 'bench', '--width', self.width, '--height', self.height,
                '--rate', f'{self.rate:g}', '--seconds', f'{self.seconds:g}',
                '--warmup', f'{self.warmup:g}', '--floor-seconds', f'{self.floor_seconds:g}',
                '--device', self.device, '--rollout-length', self.rollout_length,
                '--out', self.out]
        if not self.dds_profile:
            args.append('--no-dds-profile')
        return shlex.join(str(a) for a in args)


def _set_environment(config: BenchConfig) -> dict:
    """DDS on this machine, a domain of the bench's own, the shipped profile (or none)."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(reserve_domain_id())
    os.environ.pop('ROS_STATIC_PEERS', None)
    for name in PROFILE_VARIABLES:
        os.environ.pop(name, None)
    if config.dds_profile:
        os.environ.update(profile_environment())
    return {name: os.environ.get(name, '') for name in
            ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', *PROFILE_VARIABLES)}


class Processes:
    """The OS processes of one phase, by name, with their output in out/logs."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f'{name}.log', 'w')
        self.started[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              env=os.environ.copy())

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.started.items()}

    def failed(self) -> list[str]:
        return [name for name, p in self.started.items() if p.poll() is not None]

    def stop(self, names=None, timeout: float = 15.0) -> dict[str, int]:
        """SIGINT (the nodes then write their traces), SIGKILL after `timeout`; exit codes."""
        chosen = [n for n in (names or self.started) if n in self.started]
        for name in chosen:
            if self.started[name].poll() is None:
                self.started[name].send_signal(signal.SIGINT)
        codes = {}
        for name in chosen:
            try:
                codes[name] = self.started[name].wait(timeout)
            except subprocess.TimeoutExpired:
                self.started[name].kill()
                codes[name] = self.started[name].wait()
        return codes

    def tail(self, lines: int = 15) -> str:
        text = []
        for name in self.started:
            log = (self.log_dir / f'{name}.log').read_text(errors='replace').splitlines()
            text.append(f'--- {name}\n' + '\n'.join(log[-lines:]))
        return '\n'.join(text)


class ProcSampler:
    """CPU time and RSS of processes, from /proc/<pid>/stat and /proc/<pid>/statm."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.samples: list[tuple[float, dict[str, tuple[float, float]]]] = []

    def sample(self) -> None:
        now, values = time.monotonic(), {}
        for name, pid in self.pids.items():
            try:
                with open(f'/proc/{pid}/stat') as handle:
                    fields = handle.read().rsplit(')', 1)[1].split()
                with open(f'/proc/{pid}/statm') as handle:
                    rss_pages = int(handle.read().split()[1])
            except (OSError, IndexError):
                continue  # the process has exited
            cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            values[name] = (cpu_s, rss_pages * PAGE_BYTES / 2**20)
        self.samples.append((now, values))

    def cpu_cores(self, start: float, end: float) -> dict[str, float]:
        """Each process's CPU use between two times, in cores (1.0: one core busy)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return {name: (last[name][0] - first[name][0]) / (t1 - t0)
                for name in first if name in last}

    def rss_series(self, start: float) -> dict[str, list[tuple[float, float]]]:
        """(seconds since `start`, RSS in MiB) per process."""
        series: dict[str, list] = {name: [] for name in self.pids}
        for t, values in self.samples:
            for name, (_, rss) in values.items():
                series[name].append((round(t - start, 2), round(rss, 1)))
        return series


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open('/proc/stat') as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _loadavg() -> list[float]:
    with open('/proc/loadavg') as handle:
        return [float(v) for v in handle.read().split()[:3]]


class Observer:
    """Subscribes to the Twist at the end of a graph; keeps (publication sequence number,
    index carried in linear.x, receive time in ns) of each.

    `answering` turns true with the first Twist after the first message on `inputs` (the
    agent's watchdog publishes zero commands before any features arrive).
    """

    def __init__(self, topic: str, inputs: str | None = None):
        import rclpy
        from geometry_msgs.msg import Twist
        from rclpy.node import Node
        from std_msgs.msg import Float32MultiArray

        from perception_rl import qos
        from rclpy.signals import SignalHandlerOptions
        self.context = rclpy.Context()
        # Ctrl-C must reach the bench as KeyboardInterrupt, which stops the node processes,
        # not only shut this context down.
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node('realtime_bench_observer', context=self.context)
        self.received: list[tuple[int, float, int]] = []
        self.answering = False
        self._inputs_seen = inputs is None
        # Deep, unlike a robot base's: Fast DDS's receive thread queues every command even
        # when this process is late to take them (with depth 1 the bench lost about 2 % of
        # the commands itself, once a second, in phase with its /proc sampling).
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        observed = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Twist, topic, self._on_twist, observed)
        if inputs is not None:
            self.node.create_subscription(Float32MultiArray, inputs, self._on_input,
                                          qos.FEATURES)
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _on_twist(self, msg, info) -> None:
        self.received.append((info['publication_sequence_number'], msg.linear.x,
                              time.time_ns()))
        self.answering |= self._inputs_seen

    def _on_input(self, msg) -> None:
        self._inputs_seen = True

    def spin(self, seconds: float, sampler: ProcSampler, until=None) -> bool:
        """Spin for `seconds` (sampling /proc once a second); True early once `until()`."""
        end = time.monotonic() + seconds
        next_sample = time.monotonic()
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
            if time.monotonic() >= next_sample:
                sampler.sample()
                next_sample += 1.0
            if until is not None and until():
                return True
        return until is None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path) as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def summary(values) -> dict[str, float | int | None]:
    """p50, p99, max, mean and count of a list of milliseconds (None where it is empty)."""
    values = np.asarray([v for v in values if v is not None], float)
    if values.size == 0:
        return {'p50': None, 'p99': None, 'max': None, 'mean': None, 'count': 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {'p50': round(float(p50), 3), 'p99': round(float(p99), 3),
            'max': round(float(values.max()), 3), 'mean': round(float(values.mean()), 3),
            'count': int(values.size)}


def _start_phase(processes: Processes, observer: Observer, sampler_names) -> ProcSampler:
    """Wait for the first command that answers an input; the sampler of the phase's
    processes."""
    sampler = ProcSampler({n: processes.pids()[n] for n in sampler_names})
    observer.spin(START_TIMEOUT_S, sampler,
                  until=lambda: observer.answering or bool(processes.failed()))
    if not observer.answering or processes.failed():
        codes = processes.stop()
        raise RuntimeError(f'no command within {START_TIMEOUT_S:.0f} s (exit codes {codes}):\n'
                           + processes.tail())
    return sampler


def run_floor(config: BenchConfig, out: Path) -> dict:
    """The bare transport: frame stamp to Twist received, through two empty relays."""
    from perception_rl.transport_floor import COMMANDS
    processes = Processes(out / 'logs')
    trace = out / 'floor_source.csv'
    module = [sys.executable, '-m', 'perception_rl.transport_floor']
    processes.start('floor_features_relay', module + ['features_relay'])
    processes.start('floor_image_relay', module + ['image_relay'])
    processes.start('floor_source', module + [
        'source', '--width', str(config.width), '--height', str(config.height),
        '--rate', str(config.rate), '--trace', str(trace)])
    observer = Observer(COMMANDS)
    try:
        sampler = _start_phase(processes, observer, processes.pids())
        observer.spin(min(config.warmup, 3.0), sampler)
        start_ns, start = time.time_ns(), time.monotonic()
        observer.spin(config.floor_seconds, sampler)
        end_ns, end = time.time_ns(), time.monotonic()
        processes.stop(['floor_source'])
        observer.spin(0.5, sampler)  # what is still in flight
    finally:
        codes = processes.stop()
        observer.close()
    stamps = {int(r['index']): r['stamp_ns'] for r in _read_csv(trace)
              if start_ns <= r['stamp_ns'] < end_ns}
    received = {int(index): ns for _, index, ns in observer.received}
    latencies = [(received[i] - stamp) / 1e6 for i, stamp in stamps.items() if i in received]
    return {'end_to_end_ms': summary(latencies),
            'end_to_end_values_ms': [round(v, 3) for v in latencies], 'frames': len(stamps),
            'answered': len(latencies), 'cpu_cores': sampler.cpu_cores(start, end),
            'exit_codes': codes}


def _node_argv(name: str, params: dict) -> list[str]:
    executable = Path(sys.executable).parent / name
    argv = [str(executable) if executable.exists() else name, '--ros-args']
    for key, value in params.items():
        argv += ['-p', f'{key}:={value}']
    return argv


def run_pipeline(config: BenchConfig, out: Path) -> dict:
    """camera_node -> perception_node -> agent_node, traced frame by frame."""
    traces = {name: out / f'{name}.csv' for name in NODES}
    processes = Processes(out / 'logs')
    processes.start('agent_node', _node_argv('agent_node', {
        'image_width': config.width, 'image_height': config.height,
        'rollout_length': config.rollout_length, 'device': config.device,
        'trace_file': traces['agent_node']}))
    processes.start('perception_node', _node_argv('perception_node', {
        'device': config.device, 'trace_file': traces['perception_node']}))
    processes.start('camera_node', _node_argv('camera_node', {
        'source': 'synthetic', 'image_width': config.width, 'image_height': config.height,
        'framerate': config.rate, 'trace_file': traces['camera_node']}))
    observer = Observer('cmd_vel', inputs='features')
    try:
        sampler = _start_phase(processes, observer, NODES)
        sampler.pids['bench_observer'] = os.getpid()
        observer.spin(config.warmup, sampler)
        start_ns, start = time.time_ns(), time.monotonic()
        machine_start, load_start = _machine_cpu(), _loadavg()
        observer.spin(config.seconds, sampler)
        end_ns, end = time.time_ns(), time.monotonic()
        machine_end, load_end = _machine_cpu(), _loadavg()
        exited = processes.failed()
        processes.stop(['camera_node'])
        observer.spin(0.5, sampler)  # the last frames' commands
    finally:
        codes = processes.stop()
        observer.close()
    machine_busy = ((machine_end[0] - machine_start[0])
                    / max(machine_end[1] - machine_start[1], 1) * os.cpu_count())
    rows = {name: _read_csv(path) for name, path in traces.items()}
    frames = analyse_frames(rows, observer.received, start_ns, end_ns, config.rate)
    cpu = sampler.cpu_cores(start, end)
    rss = sampler.rss_series(start)
    return {**frames, 'cpu_cores': cpu,
            'cpu_cores_nodes': round(sum(cpu.get(n, 0.0) for n in NODES), 3),
            'memory': memory_growth(rss, config.seconds),
            'machine': {'loadavg_start': load_start, 'loadavg_end': load_end,
                        'busy_cores': round(machine_busy, 3), 'cpus': os.cpu_count(),
                        'busy_cores_others': round(machine_busy - sum(cpu.values()), 3)},
            'exit_codes': codes, 'exited_during_run': exited}


def analyse_frames(rows: dict[str, list[dict]], received: list[tuple[int, float, int]],
                   start_ns: int, end_ns: int, rate: float) -> dict:
    """Join camera, perception and agent traces and the observed commands frame by frame.

    :param received: (cmd_vel sequence number, linear.x, receive time ns) per Twist observed.
    """
    period_ms = 1e3 / rate
    perception = {r['stamp_ns']: r for r in rows['perception_node']}
    agent = {int(r['features_seq']): r for r in rows['agent_node']}
    observed = {seq: ns for seq, _, ns in received}
    frames = sorted((r for r in rows['camera_node'] if start_ns <= r['stamp_ns'] < end_ns),
                    key=lambda r: r['stamp_ns'])
    stages: dict[str, list] = {k: [] for k in (
        'camera_capture_ms', 'camera_fill_ms', 'camera_publish_ms', 'image_transport_ms',
        'perception_forward_ms', 'perception_train_ms', 'perception_callback_ms',
        'features_transport_ms', 'agent_act_ms', 'agent_callback_ms', 'agent_response_ms',
        'cmd_transport_ms', 'end_to_end_ms')}
    e2e, response, updating = [], [], []
    for camera in frames:
        stamp = camera['stamp_ns']
        stages['camera_capture_ms'].append((stamp - camera['tick_ns']) / 1e6)
        stages['camera_fill_ms'].append((camera['publish_ns'] - stamp) / 1e6)
        stages['camera_publish_ms'].append((camera['published_ns'] - camera['publish_ns']) / 1e6)
        p = perception.get(stamp)
        a = agent.get(int(p['features_seq'])) if p else None
        seen = observed.get(int(a['cmd_seq'])) if a else None
        if p:
            stages['image_transport_ms'].append((p['start_ns'] - camera['publish_ns']) / 1e6)
            stages['perception_forward_ms'].append(p['forward_ms'])
            if p['trained']:
                stages['perception_train_ms'].append(p['train_ms'])
            stages['perception_callback_ms'].append((p['end_ns'] - p['start_ns']) / 1e6)
        if a:
            stages['features_transport_ms'].append((a['start_ns'] - p['publish_ns']) / 1e6)
            stages['agent_act_ms'].append(a['act_ms'])
            stages['agent_callback_ms'].append((a['end_ns'] - a['start_ns']) / 1e6)
            stages['agent_response_ms'].append((a['publish_ns'] - p['publish_ns']) / 1e6)
            response.append((stages['agent_response_ms'][-1], bool(a['updating'])))
        latency = (seen - stamp) / 1e6 if seen is not None else None
        if latency is not None:
            stages['cmd_transport_ms'].append((seen - a['publish_ns']) / 1e6)
            stages['end_to_end_ms'].append(latency)
        e2e.append(latency)
        updating.append(bool(a and a['updating']))
    missed = [latency is None or latency > period_ms for latency in e2e]
    run, longest = 0, 0
    for miss in missed:
        run = run + 1 if miss else 0
        longest = max(longest, run)
    # Acting jitter: how far the agent's response (features published -> command published)
    # strays from its median, overall and on the ticks that found a PPO update running.
    typical = float(np.median([r for r, _ in response])) if response else 0.0
    jitter = [abs(r - typical) for r, _ in response]
    jitter_updating = [abs(r - typical) for r, busy in response if busy]
    count = len(frames)
    return {
        'frames': count,
        'answered': sum(v is not None for v in e2e),
        'answered_share': round(sum(v is not None for v in e2e) / count, 4) if count else None,
        'on_time_share': round(1 - sum(missed) / count, 4) if count else None,
        'deadline_ms': period_ms, 'deadline_misses': sum(missed),
        'longest_miss_run': longest,
        'frames_during_update': sum(updating),
        'stages': {k: summary(v) for k, v in stages.items()},
        'jitter_ms': summary(jitter), 'jitter_during_update_ms': summary(jitter_updating),
        'perception_trained_share': (round(len(stages['perception_train_ms'])
                                           / len(stages['perception_forward_ms']), 4)
                                     if stages['perception_forward_ms'] else None),
        'end_to_end_values_ms': [None if v is None else round(v, 3) for v in e2e],
    }


def memory_growth(series: dict[str, list[tuple[float, float]]], seconds: float) -> dict:
    """RSS of the nodes over the measured run: start, end and growth in MiB (medians of the
    first and last tenth, so a momentary peak does not count as growth)."""
    result = {'series_mib': series}
    totals = {}
    for name in NODES:
        points = [(t, rss) for t, rss in series.get(name, []) if 0.0 <= t <= seconds]
        for t, rss in points:
            totals[t] = totals.get(t, 0.0) + rss
    points = sorted(totals.items())
    if len(points) >= 4:
        tenth = max(1, len(points) // 10)
        first = float(np.median([rss for _, rss in points[:tenth]]))
        last = float(np.median([rss for _, rss in points[-tenth:]]))
        result.update(nodes_start_mib=round(first, 1), nodes_end_mib=round(last, 1),
                      nodes_growth_mib=round(last - first, 1))
    else:
        result.update(nodes_start_mib=None, nodes_end_mib=None, nodes_growth_mib=None)
    return result


def check_budgets(pipeline: dict, floor: dict, seconds: float) -> list[dict]:
    """Issue 5's budgets: name, measured value, limit, passed."""
    stages = pipeline['stages']

    def budget(name, value, limit, passed, note=''):
        return {'budget': name, 'value': value, 'limit': limit,
                'passed': bool(passed) if value is not None else False, 'note': note}

    e2e_p50, floor_p50 = stages['end_to_end_ms']['p50'], floor['end_to_end_ms']['p50']
    callbacks = (stages['perception_callback_ms']['p50'] or 0.0) + \
        (stages['agent_callback_ms']['p50'] or 0.0)
    over_floor = (round(e2e_p50 - floor_p50, 3)
                  if e2e_p50 is not None and floor_p50 is not None else None)
    growth = pipeline['memory']['nodes_growth_mib']
    p99 = lambda stage: stages[stage]['p99']  # noqa: E731
    jitter = pipeline['jitter_during_update_ms']['p99']
    return [
        budget('frames answered within the tick (share)', pipeline['on_time_share'], 0.99,
               (pipeline['on_time_share'] or 0.0) >= 0.99),
        budget('never two misses in a row (longest run of misses)',
               pipeline['longest_miss_run'], 1, pipeline['longest_miss_run'] <= 1),
        budget('end-to-end p99 (ms)', p99('end_to_end_ms'), 25.0,
               (p99('end_to_end_ms') or 1e9) <= 25.0),
        budget('end-to-end minus bare relay, medians (ms)', over_floor,
               round(1.25 * callbacks, 3),
               over_floor is not None and over_floor <= 1.25 * callbacks,
               'limit: 1.25 x (perception + agent callback medians)'),
        budget('perception callback p99 (ms)', p99('perception_callback_ms'), 15.0,
               (p99('perception_callback_ms') or 1e9) <= 15.0),
        budget('agent act p99 (ms)', p99('agent_act_ms'), 2.5,
               (p99('agent_act_ms') or 1e9) <= 2.5,
               f"features callback start to Agent.act returned; the whole callback, with "
               f"cmd_vel and focus_roi published: {p99('agent_callback_ms')}"),
        budget('acting jitter p99 while a PPO update runs (ms)', jitter, 5.0,
               jitter is not None and jitter <= 5.0,
               '' if jitter is not None else 'no PPO update ran in the measured window'),
        budget('all nodes together (cores)', pipeline['cpu_cores_nodes'], 1.0,
               pipeline['cpu_cores_nodes'] <= 1.0),
        budget('memory growth after warm-up (MiB)', growth, 50.0,
               growth is not None and growth <= 50.0,
               '' if seconds >= MEMORY_RUN_S else
               f'run of {seconds:g} s: the budget is for {MEMORY_RUN_S:.0f} s '
               f'(--seconds {MEMORY_RUN_S:.0f})'),
    ]


def plot(result: dict, path: Path) -> None:
    """Histograms of end-to-end latency (pipeline and floor) and callback times; RSS."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pipeline = result['pipeline']
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    e2e = [v for v in pipeline['end_to_end_values_ms'] if v is not None]
    floor = result['floor']['end_to_end_values_ms']
    top = max(e2e + floor + [pipeline['deadline_ms']])
    bins = np.linspace(0.0, top * 1.02, 60)
    axes[0].hist(floor, bins=bins, alpha=0.6, label='bare transport (floor)')
    axes[0].hist(e2e, bins=bins, alpha=0.6, label='camera -> perception -> agent')
    axes[0].axvline(pipeline['deadline_ms'], color='red', linestyle='--', label='tick')
    axes[0].axvline(25.0, color='black', linestyle=':', label='p99 budget')
    axes[0].set(xlabel='frame stamp to cmd_vel received (ms)', ylabel='frames', yscale='log')
    axes[0].legend()
    for stage, label in (('perception_callback_values_ms', 'perception callback'),
                         ('agent_callback_values_ms', 'agent callback')):
        axes[1].hist(pipeline[stage], bins=50, alpha=0.6, label=label)
    axes[1].set(xlabel='ms', ylabel='frames', yscale='log')
    axes[1].legend()
    for name, points in pipeline['memory']['series_mib'].items():
        if points:
            axes[2].plot(*zip(*points), label=name)
    axes[2].set(xlabel='s since the measurement began', ylabel='RSS (MiB)')
    axes[2].legend()
    figure.suptitle(result['command'])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_bench(config: BenchConfig) -> dict:
    """Both phases, the budgets, bench.json and bench.png; returns the result."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so that the node processes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    environment = _set_environment(config)
    print(f'perception-rl bench: {config.width}x{config.height} at {config.rate:g} Hz, '
          f'ROS_DOMAIN_ID={environment["ROS_DOMAIN_ID"]}, DDS profile '
          f'{environment[PROFILE_VARIABLES[0]] or "none (builtin transports)"}', flush=True)
    print(f'floor: bare transport for {config.floor_seconds:g} s ...', flush=True)
    floor = run_floor(config, out)
    print(f'pipeline: warm-up {config.warmup:g} s, then {config.seconds:g} s ...', flush=True)
    pipeline = run_pipeline(config, out)
    traces = {name: _read_csv(out / f'{name}.csv') for name in ('perception_node',
                                                                 'agent_node')}
    pipeline['perception_callback_values_ms'] = [
        round((r['end_ns'] - r['start_ns']) / 1e6, 3) for r in traces['perception_node']]
    pipeline['agent_callback_values_ms'] = [
        round((r['end_ns'] - r['start_ns']) / 1e6, 3) for r in traces['agent_node']]
    budgets = check_budgets(pipeline, floor, config.seconds)
    result = {'config': asdict(config), 'command': config.command(),
              'environment': environment, 'floor': floor, 'pipeline': pipeline,
              'budgets': budgets, 'passed': all(b['passed'] for b in budgets),
              'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    (out / 'bench.json').write_text(json.dumps(result, indent=1))
    (out / 'table.md').write_text(markdown_table(result))
    plot(result, out / 'bench.png')
    print(report(result))
    return result


def markdown_table(result: dict) -> str:
    """The stages and the budgets as Markdown tables (for docs/realtime_benchmark.md)."""
    p, f = result['pipeline'], result['floor']
    cell = lambda v: '-' if v is None else f'{v:.2f}'  # noqa: E731
    lines = ['| stage (ms) | p50 | p99 | max | frames |', '| --- | --- | --- | --- | --- |']
    for name, s in [('floor: bare transport, stamp to Twist', f['end_to_end_ms']),
                    *p['stages'].items(), ('acting jitter', p['jitter_ms']),
                    ('acting jitter during PPO updates', p['jitter_during_update_ms'])]:
        lines.append(f"| {name.removesuffix('_ms')} | {cell(s['p50'])} | {cell(s['p99'])} | "
                     f"{cell(s['max'])} | {s['count']} |")
    lines += ['', '| budget | measured | limit | verdict |', '| --- | --- | --- | --- |']
    for b in result['budgets']:
        note = f" ({b['note']})" if b['note'] else ''
        lines.append(f"| {b['budget']} | {b['value']} | {b['limit']} | "
                     f"{'PASS' if b['passed'] else 'FAIL'}{note} |")
    m = p['machine']
    lines += ['', f"CPU per process (cores): "
              + ', '.join(f'{k} {v:.3f}' for k, v in p['cpu_cores'].items())
              + f"; machine busy {m['busy_cores']} of {m['cpus']} cores, others "
              f"{m['busy_cores_others']}; load average {m['loadavg_start']} at the start, "
              f"{m['loadavg_end']} at the end.", '', f"`{result['command']}`"]
    return '\n'.join(lines) + '\n'


def report(result: dict) -> str:
    """The stage table, the budgets with PASS/FAIL and the command that reproduces them."""
    p, f = result['pipeline'], result['floor']
    lines = ['', f"{'stage (ms)':<28}{'p50':>9}{'p99':>9}{'max':>9}{'count':>7}"]
    rows = [('floor: stamp->Twist', f['end_to_end_ms'])] + list(p['stages'].items())
    for name, s in rows:
        cells = ''.join(f'{s[k]:9.2f}' if s[k] is not None else f'{"-":>9}'
                        for k in ('p50', 'p99', 'max'))
        lines.append(f'{name:<28}{cells}{s["count"]:7d}')
    lines.append(f"frames {p['frames']}, answered {p['answered']} ({p['answered_share']}), "
                 f"within {p['deadline_ms']:g} ms {p['on_time_share']}, misses "
                 f"{p['deadline_misses']}, longest run {p['longest_miss_run']}; "
                 f"{p['frames_during_update']} frames during PPO updates")
    lines.append('CPU (cores): ' + ', '.join(f'{k} {v:.3f}' for k, v in p['cpu_cores'].items())
                 + f"; nodes together {p['cpu_cores_nodes']:.3f}; machine busy "
                 f"{p['machine']['busy_cores']} of {p['machine']['cpus']} cores, load "
                 f"{p['machine']['loadavg_start']}")
    m = p['memory']
    lines.append(f"RSS of the nodes: {m['nodes_start_mib']} -> {m['nodes_end_mib']} MiB")
    if p['exited_during_run']:
        lines.append(f"EXITED during the run: {p['exited_during_run']} (see logs/)")
    if any(p['exit_codes'].values()):
        lines.append(f"exit codes: {p['exit_codes']} (see logs/)")
    lines.append('')
    for b in result['budgets']:
        verdict = 'PASS' if b['passed'] else 'FAIL'
        note = f"  ({b['note']})" if b['note'] else ''
        lines.append(f"{verdict}  {b['budget']}: {b['value']} (limit {b['limit']}){note}")
    lines.append('')
    lines.append(f"reproduce: {result['command']}")
    return '\n'.join(lines)
