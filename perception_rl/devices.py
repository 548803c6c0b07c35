"""Which torch device the learning code runs on: cpu, cuda or auto."""
import torch

DEVICES = ('cpu', 'cuda', 'auto')


def resolve_device(name: str) -> torch.device:
    """cpu, cuda or auto -> a torch device; cuda without a GPU is an error, not a fallback."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError("'device' is 'cuda' but torch sees no CUDA device "
                         "(use 'cpu' or 'auto')")
    if name not in ('cpu', 'cuda'):
        raise ValueError(f"'device' must be cpu, cuda or auto, not {name!r}")
    return torch.device(name)


def available_device(name: str, logger) -> str:
    """A node's `device` parameter, with 'cuda' falling back to 'cpu' (and one warning saying
    so) where torch sees no CUDA device: a robot keeps acting on a machine without a GPU."""
    if name == 'cuda' and not torch.cuda.is_available():
        logger.warning("device 'cuda' asked for, but torch sees no CUDA device (a CPU build "
                       "of torch, or no GPU): running on cpu")
        return 'cpu'
    return name


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read afterwards times it (CUDA runs
    asynchronously; on the CPU this does nothing)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
