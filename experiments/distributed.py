"""Data-parallel training: one process per GPU (or per CPU task with gloo), nothing else.

The process group is set up from the standard `env://` variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which torchrun sets and which submitit's
TorchDistributedEnvironment derives from SLURM (one task per GPU: `srun`/submitit with
tasks_per_node = gpus_per_node). Without them the run is a single process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (a no-op in a single process)."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def hosts(self) -> list[str]:
        """The distinct hostnames of the ranks, in rank order: where a multi-node run ran."""
        names = [socket.gethostname()] * self.world_size
        if self.world_size > 1:
            dist.all_gather_object(names, names[0])
        return list(dict.fromkeys(names))


def slurm_tasks() -> int:
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def export_slurm_env() -> None:
    """In a multi-task SLURM step not started by torchrun, export RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT the way submitit derives them."""
    if "RANK" in os.environ or slurm_tasks() < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    # submitit jobs set SUBMITIT_EXECUTOR; a plain `srun` step reads the same SLURM variables.
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
    # Keep CUDA_VISIBLE_DEVICES as SLURM set it; init_distributed picks the device.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def train_alone() -> None:
    """Make this process train on its own although it is one task of a multi-task SLURM
    step (a study spreads its workers over nodes as the tasks of one job): with RANK set,
    export_slurm_env leaves the environment alone and no process group is started. The
    task's local id stays its LOCAL_RANK, so workers sharing a GPU node use different GPUs."""
    os.environ.update(RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))


def init_distributed() -> Distributed:
    """Join (or reuse) the process group this process belongs to; idempotent."""
    export_slurm_env()
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
    return Distributed(rank, world_size, device)


def leave_distributed() -> None:
    """Leave the process group together: a rank that tears gloo down while a peer is
    still in a collective or writing records can abort the peer ("terminate called
    without an active exception"). Call it on success only; a failed rank just exits."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def job_id() -> str | None:
    """The submitit job (SLURM: `ARRAYID_TASK`) this process runs in, if any."""
    import submitit

    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:  # not in a submitit job (the debug executor, `train`)
        return None
