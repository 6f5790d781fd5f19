"""The model registry: ResNet-20 as published, the small models, plug-ins and their errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from dsgd_contract.config import Dataset
from dsgd_trainer.data import EpochSampler, load_data
from dsgd_trainer.models import MODELS, ModelError, build_model
from dsgd_trainer.models.resnet import ZeroPadShortcut
from torch import nn

IMAGE_SHAPES = [(3, 32, 32), (1, 28, 28), (1, 8, 8)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread, and predictably so on a busy 2-core CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_resnet20_has_the_papers_size_and_depth() -> None:
    model = build_model("resnet20", (3, 32, 32), 10)
    assert 260_000 <= parameter_count(model) <= 280_000  # "0.27M" in He et al., Table 6
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == 20  # 6n + 2 with n = 3; option A shortcuts add no layers
    assert [m.out_channels for m in weighted[:-1]] == [16] * 7 + [32] * 6 + [64] * 6
    shortcuts = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2 and all(parameter_count(m) == 0 for m in shortcuts)


def test_option_a_shortcut_subsamples_and_zero_pads_channels() -> None:
    x = torch.randn(2, 16, 7, 7)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_builtin_models_map_image_batches_to_logits(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, num_classes=7)
    logits = model(torch.randn(5, *shape))
    assert logits.shape == (5, 7) and logits.dtype == torch.float32
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_takes_flat_features() -> None:
    assert build_model("mlp", (32,), 4)(torch.randn(3, 32)).shape == (3, 4)


@pytest.mark.parametrize("name", ["resnet20", "cnn"])
def test_convolutional_models_refuse_flat_inputs_naming_the_shape(name: str) -> None:
    with pytest.raises(ModelError, match=rf"{name!r} needs C×H×W image inputs.*\(32,\).*mlp"):
        build_model(name, (32,), 10)


def test_cnn_refuses_images_too_small_for_its_pooling() -> None:
    with pytest.raises(ModelError, match=r"H, W ≥ 4.*\(1, 3, 3\)"):
        build_model("cnn", (1, 3, 3), 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_initialisation_follows_the_global_seed(name: str) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return list(build_model(name, (1, 8, 8), 10).state_dict().values())

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builtin_models_learn_digits(name: str) -> None:
    torch.manual_seed(0)
    data = load_data(Dataset(name="digits"), seed=0, device=torch.device("cpu"))
    model = build_model(name, data.input_shape, data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = EpochSampler(len(data.train), seed=0, rank=0, world_size=1, batch_size=32)
    for epoch in range(2):
        model.train()
        for indices in sampler.batches(epoch):
            loss = F.cross_entropy(model(data.train.inputs[indices]), data.train.targets[indices])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(data.test.inputs).argmax(dim=1)
    accuracy = (predictions == data.test.targets).float().mean().item()
    assert accuracy > 0.8, f"{name} reached only {accuracy:.1%} on digits after 2 epochs"


def test_unknown_model_lists_the_builtins() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet56'; use one of resnet20, cnn, mlp"):
        build_model("resnet56", (3, 32, 32), 10)


# --- plug-ins -----------------------------------------------------------------------------------

PLUGIN_MODULE = """
from torch import nn


def linear(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * 2, num_classes))


def not_a_model(input_shape, num_classes):
    return "a model"


def positional_only(shape, classes):
    return nn.Linear(1, 1)


def explodes(input_shape, num_classes):
    raise RuntimeError("out of ideas")


constant = 3
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "dsgd_test_model_plugin.py").write_text(PLUGIN_MODULE)
    (tmp_path / "dsgd_test_broken_plugin.py").write_text("raise ImportError('needs torchvision')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("dsgd_test_model_plugin", "dsgd_test_broken_plugin"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return "dsgd_test_model_plugin"


def test_plugin_model_is_called_with_shape_and_classes(plugin_module: str) -> None:
    model = build_model(f"{plugin_module}:linear", (3, 2), 5)
    assert model(torch.randn(4, 3, 2)).shape == (4, 5)


@pytest.mark.parametrize(
    ("reference", "complaint"),
    [
        ("dsgd_test_model_plugin:not_a_model", "returned a str, not a torch.nn.Module"),
        ("dsgd_test_model_plugin:positional_only", "failed when called as positional_only"),
        ("dsgd_test_model_plugin:explodes", "RuntimeError: out of ideas"),
        ("dsgd_test_model_plugin:missing", "has no attribute 'missing'"),
        ("dsgd_test_model_plugin:constant", "'constant' is a int, not a callable"),
        ("dsgd_test_broken_plugin:model", "importing module .* failed: ImportError: needs torch"),
        ("no_such_dsgd_package.models:net", "cannot import module 'no_such_dsgd_package.models'"),
    ],
)
def test_bad_plugin_is_a_model_error_naming_the_reference(
    plugin_module: str, reference: str, complaint: str
) -> None:
    with pytest.raises(ModelError, match=complaint) as raised:
        build_model(reference, (3, 2), 5)
    assert repr(reference) in str(raised.value)


def test_zero_init_residual_starts_each_block_as_the_identity() -> None:
    model = build_model("resnet20", (3, 32, 32), 10, zero_init_residual=True)
    blocks = [m for m in model.modules() if hasattr(m, "bn2")]
    assert len(blocks) == 9
    for block in blocks:
        assert not block.bn2.weight.any()  # γ = 0: the block adds nothing at first
        assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))
    assert torch.equal(model.bn.weight, torch.ones_like(model.bn.weight))
    plain = build_model("resnet20", (3, 32, 32), 10)
    assert all(
        torch.equal(m.bn2.weight, torch.ones(m.bn2.weight.shape))
        for m in plain.modules()
        if hasattr(m, "bn2")
    )
    with pytest.raises(ModelError, match="residual"):
        build_model("mlp", (32,), 10, zero_init_residual=True)
