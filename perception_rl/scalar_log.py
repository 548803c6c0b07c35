"""TensorBoard scalars, or nothing when no log directory is given."""


class ScalarLog:
    """Writes scalars under `log_dir`; every call is a no-op when `log_dir` is empty."""

    def __init__(self, log_dir: str):
        self._writer = None
        if log_dir:
            # Imported here: tensorboard takes about a second to import, and most runs of a
            # node on a robot do not log to it.
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir)

    def write(self, scalars: dict[str, float], step: int) -> None:
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
