"""Shared test setup."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _auto_device_is_the_cpu(request, monkeypatch):
    """Tests compare runs bit for bit, which CUDA kernels do not promise: outside
    tests/test_cuda.py, ``--device auto`` (the default) stays on the CPU even beside a GPU."""
    if request.path.name != "test_cuda.py":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def toy_method():
    """The method of tests/toy_policy.py, registered for one test (then removed again, so that
    the other tests' lists of methods stay the built-in ones)."""
    import toy_policy

    from dataprune.policies import POLICIES, register

    register(toy_policy.LowestLoss)
    yield toy_policy.LowestLoss
    POLICIES.pop(toy_policy.LowestLoss.name)
