"""Where and how the model runs: the device, the precision, and the torchrun environment.

Every `--device` and `--precision` flag of every command is checked here, once, before any heavy
work (model load, data reading):

    env = dist_env()                      # RANK / WORLD_SIZE / LOCAL_RANK (one process when unset)
    device = resolve_device("auto", env)  # cuda:LOCAL_RANK when a GPU is there, else cpu
    dtype = precision_dtype("bf16", device)
    with autocast(device, "bf16"): ...
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from lbdt_cli.errors import LbdtError

__all__ = [
    "PRECISION_DTYPES",
    "DistEnv",
    "dist_env",
    "resolve_device",
    "precision_dtype",
    "autocast",
    "init_distributed",
    "close_distributed",
    "shard",
]

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun launch."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the GPU of this process on its machine

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_env(env: Mapping[str, str] | None = None) -> DistEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them; one process when they are unset.
    LOCAL_RANK defaults to RANK (one machine)."""
    env = os.environ if env is None else env

    def number(name: str, default: int) -> int:
        text = env.get(name) or ""
        try:
            return int(text) if text else default
        except ValueError:
            raise LbdtError(f"the environment variable {name} must be an integer, got {text!r}") from None

    rank = number("RANK", 0)
    return DistEnv(rank=rank, world_size=max(1, number("WORLD_SIZE", 1)), local_rank=number("LOCAL_RANK", rank))


def resolve_device(device: str | torch.device | None = "auto", env: DistEnv | None = None) -> torch.device:
    """`auto` -> a CUDA device if there is one, else the CPU. Under torchrun, `auto` and `cuda`
    mean this process's GPU (cuda:LOCAL_RANK). LbdtError for an unknown name or a CUDA device that
    is not there."""
    if isinstance(device, torch.device):
        return device
    env = env or DistEnv()
    if device in ("auto", "", None):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise LbdtError(f"unknown --device {device!r} (an unknown device; use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LbdtError(f"--device {device}: no CUDA GPU is available here (use cpu or auto)")
        if dev.index is None and env.distributed:
            dev = torch.device("cuda", env.local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LbdtError(f"--device {dev}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise LbdtError(f"unknown --device {device!r} (an unknown device; use auto, cpu, cuda or cuda:N)")
    return dev


def precision_dtype(precision: str, device: torch.device | None = None) -> torch.dtype:
    """`fp32` / `fp16` / `bf16` -> the dtype. LbdtError for another name, or fp16 off CUDA when
    `device` is given (fp16 autocast is a CUDA feature)."""
    if precision not in PRECISION_DTYPES:
        raise LbdtError(f"unknown --precision {precision!r} (use fp32, fp16 or bf16)")
    if precision == "fp16" and device is not None and device.type != "cuda":
        raise LbdtError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return PRECISION_DTYPES[precision]


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for `precision` (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision_dtype(precision))


def init_distributed(device: torch.device, env: DistEnv) -> bool:
    """Join the torchrun process group (NCCL on GPUs, gloo on the CPU) if there is more than one
    process and it is not joined yet; pins this process to its GPU. True when it was started here."""
    import torch.distributed as dist

    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if not env.distributed or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence, env: DistEnv) -> list:
    """This rank's share of `items`: items[rank::world_size]."""
    return list(items)[env.rank :: env.world_size] if env.distributed else list(items)
