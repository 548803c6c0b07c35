"""How long the agent takes to act, while a PPO update runs on its worker thread and while not.

    .venv/bin/python scripts/act_latency_during_updates.py [--ticks 2048] [--rollout 256]

Acts on random 64-float features at 20 Hz (one torch thread, as the node) and prints the
act time's p50 and p99 in both states. The node reports the same on /diagnostics as
tick_ms_p99_during_update.
"""
import argparse
import time

import numpy as np
import torch

from perception_rl.agent import Agent, AgentConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ticks', type=int, default=2048)
    parser.add_argument('--rollout', type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    agent = Agent(AgentConfig(rollout_length=args.rollout))
    rng = np.random.default_rng(0)
    during, idle = [], []
    try:
        for _ in range(args.ticks):
            features = rng.standard_normal(64).astype(np.float32)
            busy = agent.updating
            start = time.perf_counter()
            agent.act(features, reward=0.1)
            (during if busy else idle).append(1e3 * (time.perf_counter() - start))
            time.sleep(0.05)
    finally:
        agent.close()
    for name, values in (('idle', idle), ('during updates', during)):
        if values:
            p50, p99 = np.percentile(values, [50, 99])
            print(f'act {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(values)} ticks)')
    print(f'{agent.updates} updates')


if __name__ == '__main__':
    main()
