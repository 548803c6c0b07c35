"""perception-rl: the project's command line."""
import argparse
import sys
from pathlib import Path


def _add_bench_arguments(parser: argparse.ArgumentParser, arms: str, out: str) -> None:
    """The arguments both benchmarks share."""
    parser.add_argument('--arms', default=arms, help='comma-separated arms, or "all"')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--workers', type=int, default=2, help='runs in parallel')
    parser.add_argument('--out', default=out)


def _names(text: str, known) -> list[str]:
    """A comma-separated list of names, or all of `known` for 'all'."""
    return list(known) if text == 'all' else text.split(',')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='perception-rl', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    run = commands.add_parser(
        'run', help='camera, perception and agent in one process (the main job)',
        description='Run camera_node, perception_node and agent_node in one process at the '
                    'camera framerate, show progress, and leave a run directory with the '
                    'config, TensorBoard scalars and checkpoints.')
    run.add_argument('--source', default='synthetic',
                     help="'synthetic' (default), a webcam index ('0'), a device path or a "
                          'video file')
    run.add_argument('--duration', type=float, default=60.0,
                     help='seconds to run (default 60; 0 runs until Ctrl-C)')
    run.add_argument('--out', default=None,
                     help='run directory (default runs/<date>-<time>); an existing one is '
                          'resumed from its checkpoints')
    run.add_argument('--params-file', default=None,
                     help='ROS parameter YAML with a block per node (config/perception_rl.yaml)')
    bench = commands.add_parser(
        'representation-bench', help='linear-probe benchmark of the auxiliary losses',
        description='Stream synthetic scenes whose state is known through the perception '
                    'core, once per arm, scene family and seed, and report how well a linear '
                    'probe reads the state from the features (docs/representation_benchmark.md).')
    _add_bench_arguments(bench, 'frozen,tpc+vicreg,contrastive+vicreg',
                         'runs/representation_bench')
    bench.add_argument('--families', default='all',
                       help='comma-separated scene families, or "all"')
    bench.add_argument('--frames', type=int, default=3000)
    drift = commands.add_parser(
        'drift-bench', help='how much drifting features hurt a learning agent',
        description='The agent learns a fixation task on features from frozen, learning and '
                    'learning-with-EMA-target perception; reports reward early and late and '
                    'the feature drift per rollout (docs/representation_benchmark.md).')
    _add_bench_arguments(drift, 'all', 'runs/drift_bench')
    drift.add_argument('--steps', type=int, default=12000)
    args = parser.parse_args(argv)
    if args.command == 'run':
        from perception_rl.run_job import run_job
        sys.exit(run_job(args.source, args.duration or None, args.out, args.params_file))
    if args.command == 'representation-bench':
        from perception_rl.representation_bench import ARMS, run_benchmark
        from perception_rl.synthetic_scene import SCENE_FAMILIES
        try:
            run_benchmark(_names(args.arms, ARMS), _names(args.families, SCENE_FAMILIES),
                          args.seeds, args.frames, Path(args.out), args.workers)
        except ValueError as error:
            sys.exit(f'perception-rl representation-bench: {error}')
    if args.command == 'drift-bench':
        from perception_rl.drift_bench import ARMS, run_benchmark
        try:
            run_benchmark(_names(args.arms, ARMS), args.seeds, args.steps, Path(args.out),
                          args.workers)
        except ValueError as error:
            sys.exit(f'perception-rl drift-bench: {error}')


if __name__ == '__main__':
    main()
