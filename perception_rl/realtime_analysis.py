"""What perception-rl bench measured: frames joined to their commands, stage latencies, the
budgets of issue 5, and the report, table and plot of a run (realtime_bench.py runs it)."""
from pathlib import Path

import numpy as np

NODES = ('camera_node', 'perception_node', 'agent_node')
MEMORY_RUN_S = 600.0
"""The memory budget is stated for a run of this length."""


def summary(values) -> dict[str, float | int | None]:
    """p50, p99, max, mean and count of a list of milliseconds (None where it is empty)."""
    values = np.asarray([v for v in values if v is not None], float)
    if values.size == 0:
        return {'p50': None, 'p99': None, 'max': None, 'mean': None, 'count': 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {'p50': round(float(p50), 3), 'p99': round(float(p99), 3),
            'max': round(float(values.max()), 3), 'mean': round(float(values.mean()), 3),
            'count': int(values.size)}


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
