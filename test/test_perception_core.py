"""The perception core: view shapes, feature shapes, and an auxiliary loss that learns."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.encoder import EncoderConfig, VisualPerception
from perception_rl.foveation import Roi, crop_fovea, downsample_periphery
from perception_rl.online_perception import ACTION_DIM, OnlinePerception, PerceptionConfig
from perception_rl.synthetic_scene import SyntheticScene


@pytest.mark.parametrize('cx, cy', [(-1, -1), (1, 1), (0, 0), (5, -5), (float('nan'), 0.3)])
def test_roi_around_stays_inside_and_centre_inverts_it(cx, cy):
    roi = Roi.around(cx, cy, 640, 480, 128, 96)
    assert 0 <= roi.x and roi.x + roi.width <= 640 and 0 <= roi.y and roi.y + roi.height <= 480
    back = Roi.around(*roi.centre(640, 480), 640, 480, 128, 96)
    assert back == roi


def test_views_have_the_configured_sizes():
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    assert crop_fovea(frame, Roi(600, 450, 128, 128), 48).shape == (48, 48, 3)
    assert downsample_periphery(frame, 64, 48).shape == (48, 64, 3)
    encoder = VisualPerception(EncoderConfig())
    fovea, periphery = encoder.views(frame, Roi.centred(640, 480, 128, 128), torch.device('cpu'))
    assert fovea.shape == (1, 3, 48, 48) and periphery.shape == (1, 3, 48, 64)
    assert 0.0 <= float(fovea.min()) and float(fovea.max()) <= 1.0
    assert encoder(fovea, periphery).shape == (1, 64)


def test_the_pooled_fovea_stream_reads_a_detail_the_same_anywhere_in_the_fovea():
    stripes = np.tile((np.arange(16) // 2 % 2 * 255).astype(np.uint8), (16, 1))

    def fovea_with_stripes_at(x: int, y: int) -> torch.Tensor:
        view = np.zeros((1, 3, 48, 48), np.float32)
        view[0, :, y:y + 16, x:x + 16] = stripes / 255.0
        return torch.from_numpy(view)

    periphery = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    pooled = VisualPerception(replace(EncoderConfig(), fovea_stream='pooled'))
    torch.manual_seed(0)
    spatial = VisualPerception(EncoderConfig())
    moved, turned = {}, {}
    with torch.no_grad():
        for name, encoder in (('pooled', pooled), ('spatial', spatial)):
            here = encoder(fovea_with_stripes_at(8, 8), periphery)
            moved[name] = float((encoder(fovea_with_stripes_at(24, 16), periphery) - here).norm())
            turned[name] = float((encoder(fovea_with_stripes_at(8, 8).transpose(2, 3),
                                          periphery) - here).norm())
    # Moving the stripes by the streams' total stride (8 px) changes the pooled features
    # only where a convolution's zero padding reaches them (measured: 0.002 against 0.42
    # for the spatial stream); turning them changes the features as much as ever (0.83).
    assert moved['pooled'] < 0.05 * turned['pooled'], (moved, turned)
    assert moved['spatial'] > 0.5 * turned['spatial'], (moved, turned)
    with pytest.raises(ValueError, match='fovea_stream'):
        VisualPerception(replace(EncoderConfig(), fovea_stream='bogus'))


def test_the_default_loss_learns_without_collapsing():
    torch.set_num_threads(1)
    scene = SyntheticScene(seed=3)
    frames = [scene.step() for _ in range(100)]
    core = OnlinePerception(PerceptionConfig(seed=0))
    roi, action = Roi.centred(640, 480, 128, 128), np.zeros(ACTION_DIM, np.float32)
    losses, spread = [], []
    for _ in range(5):
        steps = [core.step(f, roi, action) for f in frames]
        losses.append(np.mean([s.loss_terms['total'] for s in steps if s.trained]))
        spread.append(np.stack([s.features for s in steps]).std(axis=0).mean())
    # reconstruction at 1e-4 learns slowly: 0.059 to 0.049 from the first pass to the fifth
    # (0.6 % with orthogonal gradients: docs/representation_benchmark.md)
    assert losses[-1] < 0.97 * losses[0], losses
    assert min(spread) > 0.15, spread  # a constant encoder would predict perfectly
    assert core.train_steps == 5 * 100 - 1  # no loss on the very first frame


def test_frozen_and_paused_perception_do_not_change_weights():
    frames = [SyntheticScene(seed=4).step() for _ in range(5)]
    for core in (OnlinePerception(PerceptionConfig(aux=replace(AuxLossConfig(), spec='none'))),
                 OnlinePerception(PerceptionConfig())):
        core.training = False
        before = [p.detach().clone() for p in core.encoder.parameters()]
        steps = [core.step(f, Roi(0, 0, 64, 64), np.zeros(ACTION_DIM)) for f in frames]
        assert not any(s.trained for s in steps) and core.train_steps == 0
        assert all(torch.equal(a, b) for a, b in zip(before, core.encoder.parameters()))
        assert steps[0].features.shape == (64,) and steps[0].features.dtype == np.float32


def test_unknown_loss_and_missing_cuda_are_refused():
    with pytest.raises(ValueError, match='aux_loss'):
        OnlinePerception(PerceptionConfig(aux=replace(AuxLossConfig(), spec='bogus')))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='cuda'):
            OnlinePerception(PerceptionConfig(device='cuda'))


def test_a_full_frame_roi_is_centred():
    assert Roi(0, 0, 640, 480).centre(640, 480) == (0.0, 0.0)
    assert Roi(0, 100, 640, 128).centre(640, 480)[0] == 0.0


@pytest.mark.parametrize('spec', ['reconstruction', 'tpc+vicreg', 'contrastive+coherence',
                                  'pisco'])
def test_frames_of_any_size_train_and_give_finite_features(spec):
    """A 1-pixel-wide frame once crashed vicreg's other views (an empty crop)."""
    core = OnlinePerception(PerceptionConfig(aux=AuxLossConfig(spec=spec)))
    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (1, 500), (500, 1), (7, 7), (120, 160)]:
        frame = rng.integers(0, 256, (height, width, 3), np.uint8)
        for _ in range(2):
            step = core.step(frame, Roi.centred(width, height, 48, 48), np.zeros(ACTION_DIM))
            assert step.features.shape == (64,) and np.isfinite(step.features).all()
    assert core.train_steps > 0


class _Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, message):
        self.warnings.append(message)


def test_nodes_fall_back_to_cpu_with_one_warning_where_cuda_is_missing():
    from perception_rl.agent import Agent, AgentConfig
    from perception_rl.devices import available_device
    logger = _Logger()
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert available_device('cuda', logger) == expected
    assert len(logger.warnings) == (expected == 'cpu')
    assert available_device('cpu', logger) == 'cpu' and available_device('auto', logger) == 'auto'
    # The agent learns on the device it is given and acts on the CPU.
    agent = Agent(AgentConfig(device='auto'))
    try:
        assert next(agent.learner.model.parameters()).device.type == expected
        assert next(agent.policy.parameters()).device.type == 'cpu'
    finally:
        agent.close()


def test_fovea_detail_is_what_the_fovea_shows_beyond_the_periphery():
    frame = np.full((192, 256, 3), 128, np.uint8)
    frame[40:56, 40:56] = (np.arange(16) // 2 % 2 * 255).astype(np.uint8)[None, :, None]
    frame[120:144, 180:204] = (0, 160, 0)  # a flat square the periphery shows as it is
    rois = [Roi(24, 24, 48, 48), Roi(168, 108, 48, 48), Roi(100, 100, 48, 48)]
    core = OnlinePerception(PerceptionConfig(aux=replace(AuxLossConfig(), spec='none')))
    actions = np.zeros((3, ACTION_DIM), np.float32)
    assert core.step_batch([frame] * 3, rois, actions).fovea_detail is None  # not asked for
    seen = core.step_batch([frame] * 3, rois, actions, detail=True)
    stripes, square, grey = seen.fovea_detail
    assert seen.fovea_detail.shape == (3,) and grey < 1e-4
    # 2-pixel stripes average to grey in the 4x smaller periphery: about 0.25 per pixel over
    # a ninth of the fovea; the square differs only along its blurred edges.
    assert stripes > 0.02 and stripes > 5 * square
    # The same measure at another frame size (the ROI scaled with it).
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)
    one = core.step_batch([big], [Roi(48, 48, 96, 96)], actions[:1], detail=True)
    assert one.fovea_detail[0] == pytest.approx(stripes, rel=0.3)


def test_anchored_features_ignore_what_every_frame_shares():
    """The first views become the anchor, whose features are zero; moving the fused vector of
    every frame alike (here the fusion layer's bias) leaves anchored features as they were and
    moves unanchored ones."""
    scene = SyntheticScene(seed=5)
    frames = [scene.step() for _ in range(3)]
    moved = {}
    for anchored in (True, False):
        torch.manual_seed(0)
        encoder = VisualPerception(replace(EncoderConfig(), anchored=anchored))
        views = [encoder.views(f, Roi(0, 0, 64, 64), torch.device('cpu')) for f in frames]
        fovea, periphery = torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views])
        with torch.no_grad():
            before = encoder(fovea, periphery)
            encoder.fuse.bias += torch.randn_like(encoder.fuse.bias)
            moved[anchored] = float((encoder(fovea, periphery) - before).abs().max())
        if anchored:
            assert torch.equal(before[0], torch.zeros(64))
            assert bool(encoder.anchor_set)
            assert torch.equal(encoder.anchor_fovea, fovea[:1])
    assert moved[True] < 1e-4 and moved[False] > 0.1, moved
