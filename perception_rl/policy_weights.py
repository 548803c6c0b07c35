"""The agent's policy as one flat float vector, so perception's pisco loss can use it.

The agent publishes it on `policy_weights` (std_msgs/Float32MultiArray) after each PPO update;
each layout dimension is one tensor: its label is `name:shape` (`actor.0.weight:64x64`) and its
size the number of floats. A standard message type, because a custom interface package cannot
be built where CI runs.
"""
import numpy as np
import torch

from perception_rl.actor_critic import ActorCritic

PARTS = ('actor', 'focus')


def flatten_policy(model: ActorCritic) -> tuple[list[tuple[str, int]], np.ndarray]:
    """([(label, size)], float32 data) of the actor, focus head and their log stds."""
    tensors = {f'{part}.{name}': value for part in PARTS
               for name, value in getattr(model, part).state_dict().items()}
    tensors['log_std'] = torch.cat([model.actor_log_std, model.focus_log_std]).detach()
    labels = [(f"{name}:{'x'.join(map(str, t.shape))}", t.numel())
              for name, t in tensors.items()]
    data = np.concatenate([t.detach().cpu().numpy().ravel() for t in tensors.values()])
    return labels, data.astype(np.float32)


def unflatten_policy(labels: list[tuple[str, int]], data: np.ndarray
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(actor state, focus state, log_std) back from `flatten_policy`'s output.

    ValueError says what is malformed: sizes that do not add up, a shape that does not match
    its size, a missing part, non-finite values.
    """
    data = np.asarray(data, np.float32)
    if sum(size for _, size in labels) != data.size:
        raise ValueError(f'layout sizes add up to {sum(s for _, s in labels)} floats, '
                         f'the data has {data.size}')
    if not np.isfinite(data).all():
        raise ValueError('policy weights contain non-finite values')
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in PARTS}
    log_std, offset = None, 0
    for label, size in labels:
        name, _, shape_text = label.partition(':')
        try:
            shape = tuple(int(n) for n in shape_text.split('x')) if shape_text else ()
        except ValueError:
            raise ValueError(f'label {label!r} has no shape after the colon') from None
        if int(np.prod(shape)) != size:
            raise ValueError(f'label {label!r} does not match its size {size}')
        tensor = torch.from_numpy(data[offset:offset + size].reshape(shape).copy())
        offset += size
        part, _, key = name.partition('.')
        if name == 'log_std':
            log_std = tensor
        elif part in parts and key:
            parts[part][key] = tensor
        else:
            raise ValueError(f'unknown tensor {name!r}')
    if log_std is None or not all(parts.values()):
        raise ValueError('policy weights need actor, focus and log_std tensors')
    return parts['actor'], parts['focus'], log_std
