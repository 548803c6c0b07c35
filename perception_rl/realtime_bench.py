"""perception-rl bench: is every frame answered within the tick, against the bare transport?

Two phases in one run, each a graph of separate OS processes over the same DDS transport:

1. the floor (perception_rl/transport_floor.py): a source publishing frames of the camera's
   size and rate, two relays answering them with empty callbacks, the same topics' types and
   QoS;
2. the pipeline: camera_node (synthetic scene), perception_node and agent_node, each writing a
   per-frame trace (their `trace_file` parameter).

This process observes the Twists at the end of each graph (with their DDS sequence numbers),
samples CPU and RSS of every node from /proc, and hands the traces to realtime_analysis, which
joins them frame by frame and checks the budgets of issue 5; bench.json and bench.png go into
--out.
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

from perception_rl.dds_config import PROFILE_VARIABLES, keep_dds_here
from perception_rl.realtime_analysis import (NODES, analyse_frames, check_budgets,
                                             markdown_table, memory_growth, plot, report,
                                             summary)

START_TIMEOUT_S = 120.0
"""Longest wait for the first command (torch import and DDS discovery on a busy machine)."""
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_BYTES = os.sysconf('SC_PAGE_SIZE')


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
    """CPU time and RSS of processes with their descendants (agent_node's update process),
    from /proc/<pid>/stat and /proc/<pid>/statm."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.samples: list[tuple[float, dict[str, tuple[float, float]]]] = []

    def sample(self) -> None:
        now, values = time.monotonic(), {}
        for name, pid in self.pids.items():
            cpu_s = rss_mib = 0.0
            others = set(self.pids.values()) - {pid}  # the bench's own children are nodes
            for member in [pid, *_descendants(pid, others)]:
                try:
                    with open(f'/proc/{member}/stat') as handle:
                        fields = handle.read().rsplit(')', 1)[1].split()
                    with open(f'/proc/{member}/statm') as handle:
                        rss_pages = int(handle.read().split()[1])
                except (OSError, IndexError):
                    if member == pid:
                        break  # the process has exited
                    continue  # a descendant that has just exited
                cpu_s += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
                rss_mib += rss_pages * PAGE_BYTES / 2**20
            else:
                values[name] = (cpu_s, rss_mib)
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


def _descendants(pid: int, excluded: set[int]) -> list[int]:
    """The process ids below `pid`, from /proc/<pid>/task/<tid>/children, leaving out the
    `excluded` ones and theirs."""
    found, stack = [], [pid]
    while stack:
        for children in Path(f'/proc/{stack.pop()}/task').glob('*/children'):
            try:
                ids = [int(child) for child in children.read_text().split()
                       if int(child) not in excluded]
            except OSError:
                continue
            found += ids
            stack += ids
    return found


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


def node_argv(name: str, params: dict) -> list[str]:
    executable = Path(sys.executable).parent / name
    argv = [str(executable) if executable.exists() else name, '--ros-args']
    for key, value in params.items():
        argv += ['-p', f'{key}:={value}']
    return argv


def run_pipeline(config: BenchConfig, out: Path) -> dict:
    """camera_node -> perception_node -> agent_node, traced frame by frame."""
    traces = {name: out / f'{name}.csv' for name in NODES}
    processes = Processes(out / 'logs')
    processes.start('agent_node', node_argv('agent_node', {
        'image_width': config.width, 'image_height': config.height,
        'rollout_length': config.rollout_length, 'device': config.device,
        'trace_file': traces['agent_node']}))
    processes.start('perception_node', node_argv('perception_node', {
        'device': config.device, 'trace_file': traces['perception_node']}))
    processes.start('camera_node', node_argv('camera_node', {
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


def run_bench(config: BenchConfig) -> dict:
    """Both phases, the budgets, bench.json and bench.png; returns the result."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so that the node processes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    environment = keep_dds_here(config.dds_profile)
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

