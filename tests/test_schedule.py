"""The lr schedule of the large-batch recipe, against values computed by hand."""

from __future__ import annotations

import pytest
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.schedule import LearningRateSchedule


def config(**optimizer: object) -> TrainingConfig:
    """lr 0.1 for batch 128; 8 ranks × 64 = global batch 512, so linear scaling gives 0.4."""
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": 4, "processesPerNode": 2},
            "algorithm": {"name": "mini-batch-sgd"},
            "optimizer": {
                "learningRate": 0.1,
                "baseBatchSize": 128,
                "warmupEpochs": 2,
                "milestones": [0.5, 0.75],
                "gamma": 0.1,
                **optimizer,
            },
            "training": {"batchSizePerProcess": 64, "epochs": 10},
        }
    )


def test_linear_scaling_and_per_iteration_warmup() -> None:
    schedule = LearningRateSchedule.from_config(config(), world_size=8, steps_per_epoch=10)
    assert schedule.peak_lr == pytest.approx(0.4)  # 0.1 × 512 / 128
    assert schedule.warmup_steps == 20  # 2 epochs × 10 steps
    # From learningRate to the scaled lr, a little more every iteration.
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(1) == pytest.approx(0.1 + 0.3 * 1 / 20)  # 0.115
    assert schedule(5) == pytest.approx(0.175)
    assert schedule(19) == pytest.approx(0.385)
    assert schedule(20) == pytest.approx(0.4)
    assert schedule(35) == pytest.approx(0.4)


def test_milestones_multiply_by_gamma_from_their_step_on() -> None:
    schedule = LearningRateSchedule.from_config(config(), world_size=8, steps_per_epoch=10)
    # 100 steps in all: milestones 0.5 and 0.75 fall at steps 50 and 75.
    assert schedule.milestone_steps == (50, 75)
    assert schedule(49) == pytest.approx(0.4)
    assert schedule(50) == pytest.approx(0.04)
    assert schedule(74) == pytest.approx(0.04)
    assert schedule(75) == pytest.approx(0.004)
    assert schedule(99) == pytest.approx(0.004)


def test_world_size_enters_the_scaled_rate() -> None:
    # 2 ranks × 64 = 128 = baseBatchSize: nothing to scale, the warm-up is flat.
    schedule = LearningRateSchedule.from_config(config(), world_size=2, steps_per_epoch=10)
    assert [schedule(step) for step in (0, 10, 25)] == pytest.approx([0.1, 0.1, 0.1])


def test_no_scaling_keeps_the_given_rate() -> None:
    schedule = LearningRateSchedule.from_config(
        config(scaling="none"), world_size=8, steps_per_epoch=10
    )
    assert [schedule(step) for step in (0, 7, 20, 60, 80)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.01, 0.001]
    )


def test_without_warmup_training_starts_at_the_scaled_rate() -> None:
    schedule = LearningRateSchedule.from_config(
        config(warmupEpochs=0, milestones=[0.3]), world_size=8, steps_per_epoch=7
    )
    # 70 steps: the milestone at 0.3 × 70 = step 21.
    assert schedule.milestone_steps == (21,)
    assert schedule(0) == pytest.approx(0.4)
    assert schedule(20) == pytest.approx(0.4)
    assert schedule(21) == pytest.approx(0.04)


def test_fractional_warmup_epochs_count_in_steps() -> None:
    schedule = LearningRateSchedule.from_config(
        config(warmupEpochs=0.5), world_size=8, steps_per_epoch=10
    )
    assert schedule.warmup_steps == 5
    assert schedule(4) == pytest.approx(0.1 + 0.3 * 4 / 5)
    assert schedule(5) == pytest.approx(0.4)


@pytest.mark.parametrize(("epochs", "warmup_steps"), [(1, 5), (3, 15), (10, 50), (300, 50)])
def test_the_default_warmup_is_five_epochs_or_half_of_a_shorter_run(
    epochs: int, warmup_steps: int
) -> None:
    """Goyal et al.'s 5 epochs, but a one-epoch run that never mentions warm-up is valid
    (it used to be refused: 5 warm-up epochs is longer than training.epochs (1))."""
    unset = TrainingConfig.model_validate(
        {"optimizer": {"milestones": []}, "training": {"epochs": epochs}}
    )
    assert unset.optimizer.warmup_epochs is None
    schedule = LearningRateSchedule.from_config(unset, world_size=1, steps_per_epoch=10)
    assert schedule.warmup_steps == warmup_steps


def test_poly_schedule_decays_to_zero_after_the_warmup() -> None:
    """You et al.'s LARS schedule: peak × (1 − progress)², progress counted after the warm-up."""
    schedule = LearningRateSchedule.from_config(
        config(schedule="poly"), world_size=8, steps_per_epoch=10
    )  # 100 steps, 20 of warm-up, peak 0.4
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(19) == pytest.approx(0.385)
    assert schedule(20) == pytest.approx(0.4)
    assert schedule(40) == pytest.approx(0.4 * (1 - 20 / 80) ** 2)  # 0.225
    assert schedule(60) == pytest.approx(0.1)  # halfway: 0.4 × 0.5²
    assert schedule(99) == pytest.approx(0.4 * (1 / 80) ** 2)
    # Milestones do not apply to poly.
    assert schedule(50) == pytest.approx(0.4 * (1 - 30 / 80) ** 2)
    cubic = LearningRateSchedule.from_config(
        config(schedule="poly", polyPower=3.0), world_size=8, steps_per_epoch=10
    )
    assert cubic(60) == pytest.approx(0.05)
