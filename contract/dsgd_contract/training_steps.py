"""Where in training things happen, as global optimizer steps: lr milestones, the post-local
switch, evaluations. Pure arithmetic on the validated config, shared by the trainer's lr
schedule, its sync schedule and its loop, so the three agree on every step.
"""

from __future__ import annotations

from dsgd_contract.config import Training, TrainingConfig


def milestone_step(fraction: float, epochs: int, steps_per_epoch: int) -> int:
    """The global step from which an lr milestone at `fraction` of training applies.

    round(fraction × epochs × steps_per_epoch): milestones are fractions of all
    iterations (Goyal et al.), not of epochs. The lr schedule and the default
    post-local switch both read it from here, so the two land on the same step.
    """
    return round(fraction * epochs * steps_per_epoch)


def eval_interval_steps(training: Training, steps_per_epoch: int) -> int:
    """Steps between two evaluations: evalEvery steps, or its fraction of an epoch
    (rounded, at least 1), or one epoch by default."""
    every = training.eval_every
    if every is None:
        return steps_per_epoch
    if every >= 1:
        return int(every)
    return max(1, round(every * steps_per_epoch))


def post_local_switch_step(config: TrainingConfig, steps_per_epoch: int) -> int | None:
    """The first local step of post-local SGD (None for the other algorithms).

    An explicit `switchEpoch` switches at that epoch's first step; the default
    switches on exactly the step where the lr first decays (Lin et al. switch
    at the first decay), which `round(milestone × epochs)` epochs would miss
    whenever the two roundings differ (e.g. 5 epochs of 390 steps: epoch 2 =
    step 780, but the decay comes at step 975).
    """
    algorithm = config.algorithm
    if algorithm.name != "post-local-sgd":
        return None
    if algorithm.switch_epoch is not None:
        return algorithm.switch_epoch * steps_per_epoch
    if not config.optimizer.milestones:
        return None
    return milestone_step(config.optimizer.milestones[0], config.training.epochs, steps_per_epoch)
