"""Checkpoints as safetensors files: written atomically, read back without unpickling."""
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

SCHEMA_VERSION = 1


def state_tensors(modules: dict[str, torch.nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    """Flatten module weights and optimizer state into (tensors, json-able metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, object] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f'{name}.{key}'] = value.detach().cpu().contiguous()
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        for index, slots in state['state'].items():
            for slot, value in slots.items():
                tensors[f'optim.{name}.{index}.{slot}'] = torch.as_tensor(value).cpu().contiguous()
        meta[f'optim.{name}.param_groups'] = state['param_groups']
    return tensors, meta


def restore_state(tensors: dict[str, torch.Tensor], meta: dict,
                  modules: dict[str, torch.nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Load what `state_tensors` flattened; raises ValueError naming any mismatch."""
    for name, module in modules.items():
        prefix = f'{name}.'
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = module.state_dict()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        wrong = sorted(k for k in set(expected) & set(weights)
                       if expected[k].shape != weights[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(f'checkpoint does not fit {name}: missing {missing}, '
                             f'unexpected {unexpected}, shape differs for {wrong}')
        module.load_state_dict(weights)
    for name, optimizer in optimizers.items():
        prefix = f'optim.{name}.'
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, slot = key[len(prefix):].split('.', 1)
                # A copy: the optimizer updates its state in place, and must not write into
                # the checkpoint's tensors (or another optimizer loaded from them).
                state.setdefault(int(index), {})[slot] = value.clone()
        optimizer.load_state_dict(
            {'state': state, 'param_groups': meta[f'optim.{name}.param_groups']})


def generator_tensors(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """The states of torch random generators, as tensors for a checkpoint."""
    return {f'rng.{name}': generator.get_state() for name, generator in generators.items()}


def restore_generators(tensors: dict[str, torch.Tensor],
                       generators: dict[str, torch.Generator]) -> None:
    """Put back what `generator_tensors` saved (a generator absent from the checkpoint, as
    in those written before generators were saved, keeps its state)."""
    for name, generator in generators.items():
        state = tensors.get(f'rng.{name}')
        if state is not None:
            generator.set_state(state)


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def config_hash(config: dict) -> str:
    """A short, stable fingerprint of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def check_architecture(checkpoint: 'LoadedCheckpoint', architecture: dict,
                       ignored: tuple[str, ...] = ()) -> None:
    """ValueError naming each field where the checkpoint's architecture differs from this one.

    :param ignored: fields older checkpoints record that no longer decide what loads.
    """
    if checkpoint.metadata.get('architecture_hash') == config_hash(architecture):
        return
    ours = _flatten(json.loads(json.dumps(architecture)))  # tuples as the checkpoint has them
    theirs = _flatten(checkpoint.metadata.get('architecture', {}))
    differences = '; '.join(f'{key}: {theirs.get(key)!r} in the checkpoint, {ours.get(key)!r} '
                            'here' for key in sorted((set(ours) | set(theirs)) - set(ignored))
                            if ours.get(key) != theirs.get(key))
    if differences or not theirs:
        raise ValueError(f'{checkpoint.path.name} was made for another architecture: '
                         f'{differences or "its architecture hash differs"}')


def _flatten(value, prefix: str = '') -> dict:
    """A nested dict as {'outer.inner': value}."""
    if not isinstance(value, dict):
        return {prefix[:-1]: value}
    flat = {}
    for key, item in value.items():
        flat.update(_flatten(item, f'{prefix}{key}.'))
    return flat


def save_checkpoint(directory: str | os.PathLike, prefix: str, step: int,
                    tensors: dict[str, torch.Tensor], metadata: dict, keep: int = 3) -> Path:
    """Write `prefix-<step>.safetensors` atomically and keep the newest `keep` of them.

    Refuses to write non-finite weights: a NaN checkpoint would overwrite good ones.
    """
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f'refusing to save non-finite tensors: {bad[:5]}')
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f'{prefix}-{step:010d}.safetensors'
    header = {'schema_version': str(SCHEMA_VERSION), 'step': str(step),
              'metadata': json.dumps(metadata, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{prefix}-', suffix='.tmp')
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        with open(tmp, 'rb') as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in checkpoints(directory, prefix)[keep:]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(directory: str | os.PathLike, prefix: str) -> list[Path]:
    """This prefix's checkpoint files, newest first."""
    pattern = re.compile(rf'{re.escape(prefix)}-(\d+)\.safetensors$')
    found = [(int(m.group(1)), p) for p in Path(directory).glob(f'{prefix}-*.safetensors')
             if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back from disk."""

    tensors: dict[str, torch.Tensor]
    metadata: dict
    path: Path


def load_latest(directory: str | os.PathLike, prefix: str
                ) -> tuple[LoadedCheckpoint | None, list[tuple[Path, str]]]:
    """The newest readable checkpoint (None if there is none) and the newer ones skipped,
    each with the reason."""
    problems = []
    for path in checkpoints(directory, prefix):
        try:
            tensors = load_file(path)
            with open(path, 'rb') as handle:
                length = int.from_bytes(handle.read(8), 'little')
                header = json.loads(handle.read(length))['__metadata__']
            if int(header['schema_version']) != SCHEMA_VERSION:
                raise ValueError(f"schema version {header['schema_version']}, "
                                 f'this code reads {SCHEMA_VERSION}')
            bad = _non_finite(tensors)
            if bad:  # flipped bits in the data section read back as numbers, maybe NaN
                raise ValueError(f'non-finite values in {bad[:5]}')
            return LoadedCheckpoint(tensors, json.loads(header['metadata']), path), problems
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            problems.append((path, str(error)))
    return None, problems


def resume(core, directory: str | os.PathLike, prefix: str) -> tuple[str, bool]:
    """Load the newest readable checkpoint into `core` (anything with `.load`).

    Returns what happened, one line for the caller to log, and whether any checkpoint was
    unreadable (worth a warning). Unreadable checkpoints newer than
    the one resumed are renamed to `*.corrupt`: kept for inspection, never loaded or pruned
    again, and no longer ranked above the checkpoints this run will write. A checkpoint that
    does not fit the core raises ValueError: starting fresh instead would later prune the
    checkpoints the user meant to continue from.
    """
    loaded, problems = load_latest(directory, prefix)
    for path, _ in problems:
        path.rename(path.with_name(path.name + '.corrupt'))
    skipped = ''
    if problems:
        skipped = ' (set aside as *.corrupt, unreadable: ' + '; '.join(
            f'{path.name}: {reason}' for path, reason in problems) + ')'
    if loaded is None:
        return f'no usable {prefix} checkpoint in {directory}{skipped}: starting fresh', \
            bool(problems)
    try:
        core.load(loaded)
    except KeyError as missing:
        raise ValueError(f'{loaded.path.name} lacks {missing} in its metadata') from None
    return f'resumed from {loaded.path}{skipped}', bool(problems)
