"""perception-rl: the project's command line."""
import argparse
import sys


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
    args = parser.parse_args(argv)
    if args.command == 'run':
        from perception_rl.run_job import run_job
        sys.exit(run_job(args.source, args.duration or None, args.out, args.params_file))


if __name__ == '__main__':
    main()
