"""The harness's models (dataprune.harness.models): names, outputs in both memory formats,
sizes, and a CNN that learns (CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_harness_data import _one_thread  # noqa: F401 (autouse: one thread here too)

from dataprune.harness.data import load_dataset
from dataprune.harness.models import MODELS, build_model


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ValueError, match="model='vgg' is not known") as info:
        build_model("vgg", 3, 10, 32)
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels, size", [(1, 8), (1, 28), (3, 32)])
def test_model_forward_shapes(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, channels, 7, size).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        if name != "mlp":
            model_cl = model.to(memory_format=torch.channels_last)
            out_cl = model_cl(x.contiguous(memory_format=torch.channels_last))
            assert torch.allclose(out_cl, logits, atol=1e-4)


def test_resnet_sizes() -> None:
    n20 = sum(p.numel() for p in build_model("resnet20", 3, 10, 32).parameters())
    n18 = sum(p.numel() for p in build_model("resnet18", 3, 10, 32).parameters())
    assert 0.26e6 < n20 < 0.29e6  # He et al.: 0.27M
    assert 11.0e6 < n18 < 11.3e6


def test_cnn_learns_digits() -> None:
    torch.manual_seed(0)
    d = load_dataset("digits")
    model = build_model("cnn", d.in_channels, d.num_classes, d.image_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = d.train_x[:512], d.train_y[:512]

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(F.cross_entropy(model(x), y))

    before = loss()
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        idx = torch.randint(0, d.num_train, (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(d.train_x[idx]), d.train_y[idx]).backward()
        opt.step()
    assert loss() < 0.7 * before
