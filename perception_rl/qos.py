"""The QoS of each topic, chosen by measurement (ENVIRONMENT.md); every one is overridable.

Publishers are reliable: a reliable publisher serves both reliable and best-effort
subscribers, a best-effort one would be unheard by reliable subscribers. Users override any
of these with `qos_overrides.<topic>.<publisher|subscription>.<policy>` parameters.
"""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

# 640x480 frames across processes: best effort delivered 9 of 100, reliable depth 1 all of
# them. Depth 1: perception wants the newest frame, never a backlog of old ones.
IMAGES = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.RELIABLE)
# Features drive one command each: a short queue rides out a momentarily busy agent.
FEATURES = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                      reliability=ReliabilityPolicy.RELIABLE)
# Commands, fovea and rewards: only the newest value means anything.
LATEST = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.RELIABLE)
# Rewards are summed between decisions, so none may be dropped.
REWARDS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20,
                     reliability=ReliabilityPolicy.RELIABLE)
# A recording played back: every message matters (a frame is a training step), so a queue
# that rides out a subscriber busy for a few frames.
PLAYBACK = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE)
# The agent's policy for perception's pisco loss: published once per PPO update, and kept
# (transient local) so that a perception node started later still receives the latest.
POLICY = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL)


def overridable() -> QoSOverridingOptions:
    """QoS overriding for history, depth and reliability of one publisher or subscription."""
    return QoSOverridingOptions.with_default_policies()
