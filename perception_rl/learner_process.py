"""PPO updates in a child process, so that acting never shares the GIL with them.

On a thread of the acting process, an update holds the GIL between its many small tensor
operations, and every operation of a decision waits for it: on this 2-core machine acting's
jitter p99 during updates stayed at 5.5 ms with a 0.5 ms switch interval
(docs/realtime_benchmark.md). In a process of its own the update only competes for a core.

The child keeps a learner of its own. The acting process's learner is a mirror: it receives
the full state after every update, as bytes, and unpacks them only when someone needs it
(a checkpoint, `Agent.sync_learner`), so that no update costs acting more than the new policy
weights. A job carries the mirror's state whenever the child has not seen it yet: the first
job, the first after a checkpoint was loaded, and the first after a child died and was
started again.
"""
import multiprocessing
import os
import pickle
import signal
import threading
from typing import TYPE_CHECKING

import torch

from perception_rl.ppo import PPOLearner, UpdateAbandoned
from perception_rl.rollout import Rollout

if TYPE_CHECKING:
    from perception_rl.agent import AgentConfig

STOP = b'stop'
JOIN_TIMEOUT_S = 5.0
STARVED_AFTER_S = 10.0
"""An update still unanswered after this long has been starved of CPU (on an idle 2-core
machine one spans about one 50 ms frame: docs/realtime_benchmark.md). The child then runs as
an ordinary process at the lowest priority, nice 19, until its next job: other work on the
machine delays learning but cannot stop it (a full suite beside two nice-19 training runs
starved it for minutes)."""


class LearnerProcess:
    """A child process that runs the updates of `learner`'s configuration; `update` blocks
    until one is done (call it from one worker thread)."""

    def __init__(self, config: 'AgentConfig', learner: PPOLearner):
        self._config, self.learner = config, learner
        self._context = multiprocessing.get_context('spawn')  # fork would copy rclpy's threads
        # Shared with the mirror, so that setting `learner.abort` stops the child's update.
        self.learner.abort = self._context.Event()
        self._pending: bytes | None = None
        """The child's state after its last update, not yet unpacked into the mirror."""
        self._lock = threading.Lock()
        self.restarts = 0
        """Children started again after one had died."""
        self._start()

    def _start(self) -> None:
        self._conn, child_conn = self._context.Pipe()
        self._process = self._context.Process(
            target=serve, args=(self._config, child_conn, self.learner.abort),
            name='ppo-update', daemon=True)
        self._process.start()
        self._idle()
        child_conn.close()
        self._child_current = False

    def update(self, rollout: Rollout) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Run one update in the child: (stats, the new policy weights). UpdateAbandoned or
        RuntimeError if it failed; a child that died is started again from the mirror's last
        state for the next one."""
        if not self._process.is_alive():
            self._restart()
        state = None
        if not self._child_current:
            self.sync()
            state = self.learner.state()
        self._idle()  # undo a wake of the last job
        try:
            self._conn.send_bytes(pickle.dumps((rollout, state)))
            if not self._conn.poll(STARVED_AFTER_S):
                self.wake()
            stats, error, weights, counters = pickle.loads(self._conn.recv_bytes())
            pending = self._conn.recv_bytes()
        except (EOFError, OSError) as lost:
            self._process.join(JOIN_TIMEOUT_S)
            raise RuntimeError(f'the update process ended (exit code {self._process.exitcode}'
                               f', {lost!r}); the next update starts a new one from the last '
                               'state it reported') from None
        self._child_current = True
        with self._lock:
            self._pending = pending
        self.learner.last_good.skipped, self.learner.last_good.restores = counters
        if error is not None:
            raise error
        return stats, weights

    def sync(self) -> None:
        """Bring the mirror up to the child's last reported state."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.learner.load_state(*pickle.loads(pending))

    def invalidate(self) -> None:
        """The mirror was changed from outside (a checkpoint loaded): the next job carries it."""
        with self._lock:
            self._pending = None
        self._child_current = False

    def _idle(self) -> None:
        """Let the child run only on CPU time nothing else wants. With nice 10, a decision
        woken while perception trained on one core and the update ran on the other waited for
        perception's step (6 ms); a core running only SCHED_IDLE work counts as idle, so the
        decision takes it at once (docs/realtime_benchmark.md). The acting process sets the
        child's scheduling, never the child itself, so that a wake cannot be undone."""
        try:
            os.sched_setscheduler(self._process.pid, os.SCHED_IDLE, os.sched_param(0))
        except AttributeError:  # not Linux
            os.setpriority(os.PRIO_PROCESS, self._process.pid, 19)
        except OSError:
            pass  # already gone: the next update starts a new child

    def wake(self) -> None:
        """Let the child run as an ordinary process (nice 19) until its next job: for an
        update starved of CPU, or one that must notice an abort soon."""
        try:
            os.setpriority(os.PRIO_PROCESS, self._process.pid, 19)
            os.sched_setscheduler(self._process.pid, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):  # not Linux, not allowed, or already gone
            pass

    def _restart(self) -> None:
        self._conn.close()
        self._start()
        self.restarts += 1

    def close(self) -> None:
        """Stop the child: a running update is abandoned, the mirror keeps its last state."""
        self.learner.abort.set()
        self.wake()
        try:
            self._conn.send_bytes(STOP)
        except OSError:
            pass  # already gone
        self._process.join(JOIN_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def serve(config: 'AgentConfig', conn, abort) -> None:
    """The child: wait for (rollout, state or None), update, answer (stats, error, policy
    weights, counters), then the full state as bytes; until STOP or the pipe closes."""
    from perception_rl.agent import make_learner  # the child imports it; no cycle at load
    # Ctrl-C in a terminal reaches the whole process group: the acting process decides when
    # the child ends (STOP, or the pipe closing when it exits).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    learner = make_learner(config)
    learner.abort = abort
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        if message == STOP:
            return
        rollout, state = pickle.loads(message)
        if state is not None:
            learner.load_state(*state)
        stats = error = weights = None
        try:
            stats = learner.update(rollout)
            weights = {k: v.detach().cpu() for k, v in learner.model.state_dict().items()}
        except UpdateAbandoned as failure:
            error = failure
        except Exception as failure:  # reported in the acting process, the child goes on
            error = RuntimeError(f'{type(failure).__name__}: {failure}')
        counters = (learner.last_good.skipped, learner.last_good.restores)
        conn.send_bytes(pickle.dumps((stats, error, weights, counters)))
        conn.send_bytes(pickle.dumps(learner.state()))
