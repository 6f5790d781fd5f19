"""LARS and the optimizer factory: trust ratios against hand-computed values, exclusions."""

from __future__ import annotations

import math

import pytest
import torch
from dsgd_contract.config import Optimizer as OptimizerConfig
from dsgd_trainer.lars import LARS
from dsgd_trainer.optim import build_optimizer, split_lars_parameters
from torch import nn


def tiny_model() -> nn.Sequential:
    """Linear(2→1) with a bias, then a BatchNorm over its single output."""
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        linear, norm = model[0], model[1]
        linear.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ‖w‖ = 5
        linear.bias.copy_(torch.tensor([1.0]))
        norm.weight.copy_(torch.tensor([2.0]))
        norm.bias.copy_(torch.tensor([0.5]))
    linear.weight.grad = torch.tensor([[0.6, 0.8]])  # ‖∇w‖ = 1
    linear.bias.grad = torch.tensor([0.5])
    norm.weight.grad = torch.tensor([0.2])
    norm.bias.grad = torch.tensor([-0.4])
    return model


def lars_config(**overrides: object) -> OptimizerConfig:
    settings = {"learningRate": 0.5, "momentum": 0.0, "nesterov": False, "weightDecay": 0.1}
    return OptimizerConfig.model_validate(
        {**settings, "lars": True, "larsTrust": 0.02, **overrides}
    )


def test_trust_ratio_and_update_match_hand_computed_values() -> None:
    model = tiny_model()
    optimizer = build_optimizer(model, lars_config())
    optimizer.step()
    linear, norm = model[0], model[1]
    # trust = 0.02 × 5 / (1 + 0.1 × 5) = 1/15
    assert optimizer.state[linear.weight]["trust_ratio"].item() == pytest.approx(1 / 15)
    # w − lr × trust × (∇w + wd·w) = [3, 4] − 0.5 / 15 × [0.9, 1.2] = [2.97, 3.96]
    assert linear.weight.detach().flatten().tolist() == pytest.approx([2.97, 3.96])
    # Bias and BatchNorm parameters: global lr, no weight decay, no trust ratio.
    assert optimizer.state[linear.bias]["trust_ratio"].item() == 1.0
    assert linear.bias.item() == pytest.approx(1.0 - 0.5 * 0.5)
    assert norm.weight.item() == pytest.approx(2.0 - 0.5 * 0.2)
    assert norm.bias.item() == pytest.approx(0.5 + 0.5 * 0.4)


def test_momentum_accumulates_the_scaled_gradient() -> None:
    model = tiny_model()
    optimizer = build_optimizer(model, lars_config(momentum=0.9))
    weight = model[0].weight
    first = torch.tensor([[0.9, 1.2]]) / 15  # trust × (∇w + wd·w) at the first step
    optimizer.step()
    w1 = torch.tensor([[3.0, 4.0]]) - 0.5 * first
    weight.grad = torch.tensor([[0.0, 2.0]])  # ‖∇w‖ = 2
    optimizer.step()
    ratio = 0.02 * w1.norm() / (2.0 + 0.1 * w1.norm())
    second = ratio * (torch.tensor([[0.0, 2.0]]) + 0.1 * w1)
    expected = w1 - 0.5 * (0.9 * first + second)
    assert torch.allclose(weight.detach(), expected, atol=1e-6)
    assert optimizer.state[weight]["trust_ratio"].item() == pytest.approx(ratio.item(), rel=1e-6)


def test_zero_weights_fall_back_to_the_global_rate() -> None:
    model = tiny_model()
    with torch.no_grad():
        model[0].weight.zero_()
    optimizer = build_optimizer(model, lars_config(weightDecay=0.0))
    optimizer.step()
    assert optimizer.state[model[0].weight]["trust_ratio"].item() == 1.0
    assert model[0].weight.detach().flatten().tolist() == pytest.approx([-0.3, -0.4])


def test_biases_and_normalisation_parameters_are_excluded() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4, 3, bias=False),
        nn.LayerNorm(3),
    )
    layers, excluded = split_lars_parameters(model)
    assert [p.shape for p in layers] == [model[0].weight.shape, model[3].weight.shape]
    expected = [model[0].bias, model[1].weight, model[1].bias, model[4].weight, model[4].bias]
    assert [id(p) for p in excluded] == [id(p) for p in expected]
    optimizer = build_optimizer(model, lars_config())
    assert [(g["lars"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (True, 0.1),
        (False, 0.0),
    ]


@pytest.mark.parametrize("nesterov", [False, True])
def test_without_trust_ratio_it_is_torch_sgd(nesterov: bool) -> None:
    torch.manual_seed(0)
    ours, reference = nn.Linear(5, 3), nn.Linear(5, 3)
    reference.load_state_dict(ours.state_dict())
    settings = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 0.01}
    lars = LARS(ours.parameters(), lars=False, **settings)
    sgd = torch.optim.SGD(reference.parameters(), **settings)
    for _ in range(3):
        inputs = torch.randn(8, 5)
        for model, optimizer in ((ours, lars), (reference, sgd)):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-7)


def test_without_lars_the_factory_builds_sgd_with_the_recipe() -> None:
    model = tiny_model()
    optimizer = build_optimizer(
        model, OptimizerConfig(momentum=0.9, nesterov=True, weight_decay=5e-4)
    )
    assert type(optimizer) is torch.optim.SGD
    decayed, undecayed = optimizer.param_groups
    for group in (decayed, undecayed):
        assert (group["momentum"], group["nesterov"]) == (0.9, True)
    # Goyal et al. §5.1: no weight decay on BatchNorm's γ and β; the linear bias keeps it.
    assert [id(p) for p in decayed["params"]] == [id(model[0].weight), id(model[0].bias)]
    assert decayed["weight_decay"] == 5e-4
    assert [id(p) for p in undecayed["params"]] == [id(model[1].weight), id(model[1].bias)]
    assert undecayed["weight_decay"] == 0.0


def test_weight_decay_reaches_what_the_options_say() -> None:
    config = {"momentum": 0.0, "nesterov": False, "weightDecay": 0.1, "learningRate": 0.5}
    # One plain step of w − lr·(∇w + wd·w) by hand, for each parameter of tiny_model().
    with_decay = {"0.bias": 1.0 - 0.5 * (0.5 + 0.1), "1.weight": 2.0 - 0.5 * (0.2 + 0.2)}
    without = {"0.bias": 1.0 - 0.5 * 0.5, "1.weight": 2.0 - 0.5 * 0.2}
    for options, expected in [
        ({}, {"0.bias": with_decay["0.bias"], "1.weight": without["1.weight"]}),
        ({"weightDecayOnBiases": False}, without),
        ({"weightDecayOnNormalization": True}, with_decay),
    ]:
        model = tiny_model()
        build_optimizer(model, OptimizerConfig.model_validate({**config, **options})).step()
        state = model.state_dict()
        for name, value in expected.items():
            assert state[name].item() == pytest.approx(value), (options, name)


def test_lars_momentum_with_a_warming_up_lr_matches_hand_computed_values() -> None:
    """Three steps while the lr warms up 0.1 → 0.2 → 0.3; lr multiplies the momentum buffer.

    Convention (as torch.optim.SGD, and Goyal et al.'s form that needs no momentum
    correction when the lr changes): buf ← m·buf + trust·(∇w + wd·w); w ← w − lr_t·buf.
    """
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = LARS([weight], lr=0.1, momentum=0.9, weight_decay=0.1, trust=0.02)
    grads = [[0.6, 0.8], [0.0, 2.0], [-1.0, 0.0]]
    lrs = [0.1, 0.2, 0.3]
    w, buf = [3.0, 4.0], None
    for grad, lr in zip(grads, lrs, strict=True):
        norm_w = math.hypot(*w)
        norm_g = math.hypot(*grad)
        ratio = 0.02 * norm_w / (norm_g + 0.1 * norm_w)
        d = [ratio * (g + 0.1 * x) for g, x in zip(grad, w, strict=True)]
        buf = d if buf is None else [0.9 * b + e for b, e in zip(buf, d, strict=True)]
        w = [x - lr * b for x, b in zip(w, buf, strict=True)]

        weight.grad = torch.tensor(grad)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        assert optimizer.state[weight]["trust_ratio"].item() == pytest.approx(ratio, rel=1e-6)
        assert weight.detach().tolist() == pytest.approx(w, rel=1e-6)
    # First step by hand: ratio 0.02·5/(1 + 0.5) = 1/15, w = [3, 4] − 0.1/15·[0.9, 1.2].
    assert w != [3.0, 4.0]
