"""GAE against values computed by hand, and the rollout buffer's bookkeeping."""
import numpy as np
import pytest

from perception_rl.rollout import RolloutBuffer, compute_gae, discounted_returns


def test_gae_matches_hand_computation():
    rewards = np.array([1.0, 0.0, 2.0], np.float32)
    values = np.array([0.5, 0.25, 1.0], np.float32)
    dones = np.array([0.0, 1.0, 0.0], np.float32)  # the episode ends after step 1
    gamma, lam, last_value = 0.9, 0.8, 3.0
    # Step 2 bootstraps from last_value; step 1 ends the episode; step 0 sees step 1.
    delta2 = 2.0 + 0.9 * 3.0 - 1.0           # 3.7
    delta1 = 0.0 + 0.0 - 0.25                # -0.25 (no bootstrap past the end)
    delta0 = 1.0 + 0.9 * 0.25 - 0.5          # 0.725
    adv2 = delta2                            # 3.7
    adv1 = delta1                            # the end cuts the trace: -0.25
    adv0 = delta0 + 0.9 * 0.8 * adv1         # 0.725 - 0.18 = 0.545
    next_values = np.array([0.25, 99.0, last_value], np.float32)  # 99: ignored after an end
    advantages, returns = compute_gae(rewards, values, next_values, dones, dones, gamma, lam)
    np.testing.assert_allclose(advantages, [adv0, adv1, adv2], rtol=1e-6)
    np.testing.assert_allclose(returns, [adv0 + 0.5, adv1 + 0.25, adv2 + 1.0], rtol=1e-6)


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    rewards = np.array([1.0, 2.0, 3.0], np.float32)
    values = np.zeros(3, np.float32)
    no = np.zeros(3, np.float32)
    advantages, _ = compute_gae(rewards, values, np.array([0, 0, 10.0]), no, no, 0.5, 1.0)
    np.testing.assert_allclose(advantages, [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10,
                                            2 + 0.5 * 3 + 0.25 * 10, 3 + 0.5 * 10])


def test_a_gap_bootstraps_without_ending_and_cuts_the_trace():
    rewards, values = np.ones(3, np.float32), np.zeros(3, np.float32)
    no = np.zeros(3, np.float32)
    gap_after_0 = np.array([1.0, 0.0, 0.0], np.float32)
    next_values = np.array([4.0, 0.0, 0.0], np.float32)  # V of row 0's own next observation
    advantages, _ = compute_gae(rewards, values, next_values, no, gap_after_0, 0.5, 1.0)
    # Row 0 bootstraps from its next observation (not an episode end) and does not see row 1.
    np.testing.assert_allclose(advantages, [1 + 0.5 * 4, 1 + 0.5 * 1, 1])


def test_buffer_fills_takes_and_refuses_early_take():
    buffer = RolloutBuffer(3, feature_dim=4, action_dim=2)
    with pytest.raises(RuntimeError):
        buffer.take()
    for i in range(3):
        buffer.add(np.full(4, i), np.full(4, i + 1), np.full(2, i), -1.0, np.zeros(2), -2.0,
                   0.1, 0.2, float(i), 0.0)
    assert buffer.full
    rollout = buffer.take()
    assert buffer.size == 0
    np.testing.assert_array_equal(rollout.rewards_ext, [0, 1, 2])
    np.testing.assert_array_equal(rollout.gaps, [0, 0, 1])  # the end of a rollout is a gap
    np.testing.assert_array_equal(rollout.next_features[0], rollout.features[1])


def test_discounted_returns_restart_after_a_cut():
    returns = discounted_returns(np.array([1.0, 1.0, 1.0, 1.0]), np.array([0, 1, 0, 0]), 0.5)
    assert returns.tolist() == [1.0, 1.5, 1.0, 1.5]
