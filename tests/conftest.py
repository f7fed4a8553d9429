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
