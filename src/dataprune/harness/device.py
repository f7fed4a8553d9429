"""Where a run trains: the device, the process group under torchrun, and their clocks."""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import world
from ..errors import RunError

_started_process_group = False  # whether setup_device started torch.distributed


def setup_device(requested: str) -> torch.device:
    """The run's device; under torchrun, start the process group (nccl on CUDA, else gloo)."""
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise RunError(f"device={requested!r} is not known; choose one of: auto, cpu, cuda, cuda:N")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device={requested!r} was asked for, but CUDA is not available here")
    global _started_process_group
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if requested.startswith("cuda") else "gloo")
        _started_process_group = True
    if requested.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if world_size > 1 else torch.device(requested)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def shutdown_distributed(barrier: bool = True) -> None:
    """End the process group :func:`setup_device` started, if any (at the end of a command).

    With ``barrier`` every rank first waits for the others (a barrier), so that none tears
    down its connections while another still uses them: a rank that leaves early can otherwise
    abort at exit ("terminate called without an active exception") after a finished run. Pass
    False on an error that other ranks may not share (the barrier could wait forever).
    """
    global _started_process_group
    if _started_process_group and dist.is_initialized():
        gc.collect()  # free DDP wrappers (reference cycles) while the interpreter is alive
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
    _started_process_group = False


def is_main_process() -> bool:
    return world()[0] == 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (before reading a clock); no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def layout(x: Tensor) -> Tensor:
    """``x`` in channels_last on CUDA (faster convolutions there), as it is elsewhere."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x
