"""perception-rl: the project's command line."""
import argparse
import sys
from pathlib import Path

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.curiosity import KINDS
from perception_rl.encoder import FOVEA_STREAMS
from perception_rl.online_perception import PerceptionConfig
from perception_rl.ppo import FOCUS_REWARDS
from perception_rl.realtime_bench import BenchConfig, run_bench
from perception_rl.trainer import RETURN_WINDOW, TrainConfig, train


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
    _add_bench_arguments(bench, 'frozen,tpc,tpc/lr1e-4,reconstruction+memory',
                         'runs/representation_bench')
    bench.add_argument('--families', default='all',
                       help='comma-separated scene families, or "all"')
    bench.add_argument('--frames', type=int, default=3000)
    node_probe = commands.add_parser(
        'node-probe', help='the representation probe through perception_node over DDS',
        description='Drive a perception_node process per arm, scene family and seed: frames '
                    'on image_raw, actions on cmd_vel and focus_roi, features back, in '
                    'lock-step; then train:=false and fresh frames for the held-out probe '
                    '(docs/representation_benchmark.md, "Through perception_node").')
    _add_bench_arguments(node_probe, 'default,frozen', 'runs/node_probe')
    node_probe.add_argument('--families', default='unseen',
                            help='comma-separated scene families, "all" (the four the '
                                 'default was chosen on) or "unseen" (the others)')
    node_probe.add_argument('--frames', type=int, default=3000)
    node_probe.add_argument('--heldout', type=int, default=3000,
                            help='fresh frames for the held-out probe, with train:=false')
    still = commands.add_parser(
        'still-view-bench', help='does perception keep learning on a view that changes slowly',
        description='Per arm, scene family and seed: the auxiliary loss over a stream of one '
                    'scene without cuts (fovea fixed, no actions), and over its first 100 '
                    'frames seen again and again; reports how much it fell '
                    '(docs/representation_benchmark.md).')
    _add_bench_arguments(still, 'reconstruction/lr1e-4,reconstruction/lr1e-4/orth',
                         'runs/still_view_bench')
    still.add_argument('--families', default='all',
                       help='comma-separated scene families, or "all"')
    still.add_argument('--frames', type=int, default=500)
    still.add_argument('--passes', type=int, default=5,
                       help='times the first 100 frames are seen in the repeat stream')
    drift = commands.add_parser(
        'drift-bench', help='how much drifting features hurt a learning agent',
        description='The agent learns a fixation task on features from frozen, learning and '
                    'learning-with-EMA-target perception; reports reward early and late and '
                    'the feature drift per rollout (docs/representation_benchmark.md).')
    _add_bench_arguments(drift, 'all', 'runs/drift_bench')
    drift.add_argument('--steps', type=int, default=12000)
    trainer = commands.add_parser(
        'train', help='lock-step training on a Gymnasium task, without ROS',
        description='Train online perception and the agent together on a Gymnasium '
                    'environment with image observations, one environment step per decision, '
                    'as fast as the machine allows. Writes episodes.csv, TensorBoard scalars, '
                    'checkpoints and learning_curve.png to --out.')
    trainer.add_argument('--env', required=True,
                         help='Gymnasium id: MiniGrid-*, ALE/*, perception_rl/Foveation-v1 or '
                              'any environment with image observations or rgb_array rendering')
    trainer.add_argument('--steps', type=int, required=True)
    trainer.add_argument('--seed', type=int, default=0)
    trainer.add_argument('--out', required=True, help='run directory')
    defaults = TrainConfig('', 0)
    trainer.add_argument('--aux-loss', default=defaults.aux_loss,
                         help="perception's auxiliary loss ('none': frozen random encoder)")
    trainer.add_argument('--reconstruction-fovea', type=float,
                         default=defaults.reconstruction_fovea,
                         help='weight of redrawing the fovea in the reconstruction loss (0: the '
                              'periphery only; 0.1 or more keeps fine foveal detail)')
    trainer.add_argument('--curiosity', default=defaults.curiosity, choices=KINDS)
    trainer.add_argument('--intrinsic-coef', type=float, default=defaults.intrinsic_coef)
    trainer.add_argument('--envs', type=int, default=defaults.envs,
                         help='environments stepped together (one batch for perception)')
    trainer.add_argument('--rollout-length', type=int, default=defaults.rollout_length,
                         help='transitions per PPO update, over all environments')
    trainer.add_argument('--roi-fraction', type=float, default=defaults.roi_fraction,
                         help="fovea side as a fraction of the frame's shorter side")
    trainer.add_argument('--fovea-stream', default=defaults.fovea_stream, choices=FOVEA_STREAMS,
                         help="'pooled': the fovea stream reads a detail the same anywhere in "
                              "the fovea (for tasks where the fovea moves onto fine detail)")
    trainer.add_argument('--focus', default=defaults.focus, choices=FOCUS_REWARDS,
                         help="how the focus head learns where to look: 'task' (REINFORCE on "
                              "the task's advantage) or 'detail' (saccades rewarded by the "
                              'detail the fovea sees beyond the periphery)')
    trainer.add_argument('--fixed-fovea', action='store_true',
                         help="keep the fovea at the frame's centre")
    trainer.add_argument('--frozen-conv-layers', type=int, default=defaults.frozen_conv_layers,
                         help="bottom convolutions of each perception stream kept at their "
                              "random weights (0 to 3)")
    trainer.add_argument('--orthogonal-gradient-decay', type=float,
                         default=defaults.orthogonal_gradient_decay,
                         help="perception's orthogonal gradients: decay of the gradient "
                              'history (0: off)')
    trainer.add_argument('--orthogonal-gradient-baseline-decay', type=float,
                         default=defaults.orthogonal_gradient_baseline_decay,
                         help='decay of the slow gradient average the projection leaves in '
                              '(0: none, remove along the whole history)')
    learning = commands.add_parser(
        'learning-bench', help='learning curves: frozen and online perception, fixed fovea, '
                               'end-to-end pixel PPO (Stable-Baselines3)',
        description='Train every arm on every task for --steps steps per seed with '
                    'perception-rl train (and Stable-Baselines3 PPO for sb3-ppo); write '
                    'results.csv, table.md and a curve PNG per task (docs/learning_benchmark.md).')
    _add_bench_arguments(learning, 'all', 'runs/learning_bench')
    learning.add_argument('--tasks', default='all', help='comma-separated Gymnasium ids, or '
                                                          '"all" (MiniGrid Empty and DoorKey, '
                                                          'the foveation task)')
    learning.add_argument('--steps', type=int, default=100_000)
    pre = commands.add_parser(
        'pretrain', help='pretrain perception on a rosbag2 recording, as fast as the machine '
                         'allows',
        description='Run the frames of a recording through the online perception core '
                    '(perception_node\'s learning core) in recorded order, not in real time, '
                    'and save a checkpoint perception_node starts from (checkpoint_dir:=OUT/'
                    'checkpoints, with the same aux_loss). An existing OUT is resumed.')
    pre.add_argument('--bag', required=True, help='rosbag2 directory, .mcap or .db3 file')
    pre.add_argument('--out', required=True, help='run directory: checkpoints/, tensorboard/')
    pre.add_argument('--topic', default='',
                     help='image topic, Image or CompressedImage (default: image_raw, else '
                          'image_raw/compressed)')
    pre.add_argument('--aux-loss', default=AuxLossConfig.spec,
                     help="perception's auxiliary loss, as perception_node's aux_loss")
    pre.add_argument('--epochs', type=int, default=1, help='passes over the recording')
    pre.add_argument('--learning-rate', type=float, default=PerceptionConfig.learning_rate)
    pre.add_argument('--seed', type=int, default=0)
    pre.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'auto'))
    pre.add_argument('--threads', type=int, default=1,
                     help='torch threads (default 1: on a shared 2-core machine one thread '
                          'trained 10x faster than two; 0: torch chooses)')
    realtime = commands.add_parser(
        'bench', help='real time: camera, perception and agent as processes vs the bare '
                      'transport',
        description='Run camera_node (synthetic scene), perception_node and agent_node as '
                    'separate processes, and before them a bare relay over the same transport; '
                    'report per-stage and end-to-end latency, deadline misses, CPU and memory '
                    "per process, check issue 5's budgets, and write bench.json and bench.png "
                    'to --out (docs/realtime_benchmark.md).')
    defaults = BenchConfig()
    realtime.add_argument('--width', type=int, default=defaults.width)
    realtime.add_argument('--height', type=int, default=defaults.height)
    realtime.add_argument('--rate', type=float, default=defaults.rate, help='frames per second')
    realtime.add_argument('--seconds', type=float, default=defaults.seconds,
                          help='measured seconds of the pipeline (600 for the memory budget)')
    realtime.add_argument('--warmup', type=float, default=defaults.warmup,
                          help='seconds after the first command left out of the measurement')
    realtime.add_argument('--floor-seconds', type=float, default=defaults.floor_seconds,
                          help='measured seconds of the bare transport')
    realtime.add_argument('--device', default=defaults.device, choices=('cpu', 'cuda', 'auto'),
                          help="torch device of perception_node and agent_node")
    realtime.add_argument('--rollout-length', type=int, default=defaults.rollout_length,
                          help="agent_node's transitions per PPO update")
    realtime.add_argument('--no-dds-profile', action='store_true',
                          help="Fast DDS's builtin transports instead of the shipped profile")
    realtime.add_argument('--out', default=defaults.out)
    args = parser.parse_args(argv)
    if args.command == 'pretrain':
        _pretrain(args)
    if args.command == 'bench':
        config = BenchConfig(
            width=args.width, height=args.height, rate=args.rate, seconds=args.seconds,
            warmup=args.warmup, floor_seconds=args.floor_seconds, device=args.device,
            rollout_length=args.rollout_length, dds_profile=not args.no_dds_profile,
            out=args.out)
        try:
            result = run_bench(config)
        except RuntimeError as error:
            sys.exit(f'perception-rl bench: {error}')
        sys.exit(0 if result['passed'] else 1)
    if args.command == 'run':
        from perception_rl.run_job import run_job
        sys.exit(run_job(args.source, args.duration or None, args.out, args.params_file))
    if args.command == 'train':
        config = TrainConfig(
            args.env, args.steps, args.seed, aux_loss=args.aux_loss,
            reconstruction_fovea=args.reconstruction_fovea, curiosity=args.curiosity,
            intrinsic_coef=args.intrinsic_coef, envs=args.envs,
            rollout_length=args.rollout_length,
            roi_fraction=args.roi_fraction, fixed_fovea=args.fixed_fovea, focus=args.focus,
            fovea_stream=args.fovea_stream, frozen_conv_layers=args.frozen_conv_layers,
            orthogonal_gradient_decay=args.orthogonal_gradient_decay,
            orthogonal_gradient_baseline_decay=args.orthogonal_gradient_baseline_decay)
        try:
            summary = train(config, Path(args.out))
        except ValueError as error:
            sys.exit(f'perception-rl train: {error}')
        print(f"perception-rl train: {summary['steps']} steps at "
              f"{summary['steps_per_s']:.0f} steps/s, {summary['episodes']} episodes, mean "
              f"return of the last {RETURN_WINDOW} {summary['final_return']:+.3f}; "
              f'episodes.csv, tensorboard/, checkpoints/ and learning_curve.png in {args.out}')
    if args.command == 'learning-bench':
        from perception_rl.learning_bench import ARMS, TASKS, run_benchmark
        try:
            run_benchmark(_names(args.arms, ARMS), _names(args.tasks, TASKS), args.seeds,
                          args.steps, Path(args.out), args.workers)
        except ValueError as error:
            sys.exit(f'perception-rl learning-bench: {error}')
    if args.command == 'representation-bench':
        from perception_rl.representation_bench import ARMS, run_benchmark
        from perception_rl.synthetic_scene import SCENE_FAMILIES
        try:
            run_benchmark(_names(args.arms, ARMS), _names(args.families, SCENE_FAMILIES),
                          args.seeds, args.frames, Path(args.out), args.workers)
        except ValueError as error:
            sys.exit(f'perception-rl representation-bench: {error}')
    if args.command == 'node-probe':
        from perception_rl import node_probe
        from perception_rl.synthetic_scene import SCENE_FAMILIES, UNSEEN_FAMILIES
        families = (list(UNSEEN_FAMILIES) if args.families == 'unseen'
                    else _names(args.families, SCENE_FAMILIES))
        try:
            node_probe.run_benchmark(_names(args.arms, node_probe.ARMS), families, args.seeds,
                                     args.frames, args.heldout, Path(args.out), args.workers)
        except (RuntimeError, ValueError) as error:
            sys.exit(f'perception-rl node-probe: {error}')
    if args.command == 'still-view-bench':
        from perception_rl.still_view_bench import LOSS_ARMS, run_benchmark
        from perception_rl.synthetic_scene import SCENE_FAMILIES
        try:
            run_benchmark(_names(args.arms, LOSS_ARMS), _names(args.families, SCENE_FAMILIES),
                          args.seeds, args.frames, args.passes, Path(args.out), args.workers)
        except ValueError as error:
            sys.exit(f'perception-rl still-view-bench: {error}')
    if args.command == 'drift-bench':
        from perception_rl.drift_bench import ARMS, run_benchmark
        try:
            run_benchmark(_names(args.arms, ARMS), args.seeds, args.steps, Path(args.out),
                          args.workers)
        except ValueError as error:
            sys.exit(f'perception-rl drift-bench: {error}')


def _pretrain(args) -> None:
    import torch

    from perception_rl.bags import BagError
    from perception_rl.pretrain import PretrainConfig, pretrain
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(args.bag, Path(args.out), args.topic, args.aux_loss, args.epochs,
                            args.learning_rate, args.seed, args.device)
    try:
        summary = pretrain(config, progress=lambda line: print(line, flush=True))
    except (BagError, ValueError) as error:
        sys.exit(f'perception-rl pretrain: {error}')
    except KeyboardInterrupt:
        sys.exit(f'perception-rl pretrain: interrupted; the checkpoint so far is in '
                 f'{config.out / "checkpoints"}')
    print(f"perception-rl pretrain: {summary['frames']} frames of {summary['topic']} in "
          f"{summary['seconds']:.1f} s, {summary['frames_per_s']:.1f} frames/s "
          f"({summary['threads']} torch threads), {summary['train_steps']} train steps, aux "
          f"loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f}"
          + (f", {summary['rejected']} frames rejected" if summary['rejected'] else ''))
    print(f"checkpoint {summary['checkpoint']}; start from it with: perception_node --ros-args "
          f"-p checkpoint_dir:={config.out / 'checkpoints'} -p aux_loss:={config.aux_loss}")


if __name__ == '__main__':
    main()
