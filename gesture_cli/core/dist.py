"""Processes launched by `torchrun` / `accelerate launch`: rank, world size, and the few collectives gx needs.

The launchers set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a plain
`gx` run has none of them and gets a one-process `Dist` whose collectives do nothing, so the code that
uses it reads the same whether it runs alone or as one of N processes.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

# How long a rank waits at a barrier for the others: one rank may still be extracting its last shard
# (minutes on a CPU) while another is done. A dead rank makes the launcher stop every process anyway.
BARRIER_TIMEOUT = _dt.timedelta(hours=2)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: object = None  # torch.device this process computes on
    _owned: bool = False  # True when this Dist initialised the process group (and so destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if self.device is not None and self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def send_to_main(self, tensor) -> None:
        """Send a CPU tensor to rank 0 (through the device on NCCL, which moves only device tensors)."""
        import torch.distributed as dist

        dist.send(self._wire(tensor), dst=0)

    def recv_from(self, src: int, like):
        """Receive a tensor shaped and typed like `like` from rank `src`; returned on the CPU."""
        import torch.distributed as dist

        buf = self._wire(like)
        dist.recv(buf, src=src)
        return buf.cpu()

    def _wire(self, tensor):
        if self.device is not None and self.device.type == "cuda":
            return tensor.to(self.device).contiguous()
        return tensor.contiguous()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False


def launched_world_size() -> int:
    """WORLD_SIZE set by a launcher, 1 for a plain run (or a malformed value)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def launched_rank() -> int:
    """RANK set by a launcher for a run of several processes; 0 for a plain run (or a malformed value)."""
    try:
        return int(os.environ.get("RANK", "0") or 0) if launched_world_size() > 1 else 0
    except ValueError:
        return 0


# What the launchers tell a process about its group. A command that runs alone forgets all of it, so that
# nothing in it (Accelerate reads LOCAL_RANK) tries to join a group again.
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def keep_one_process() -> bool:
    """For a command that runs in one process, launched by `torchrun` / `accelerate launch` anyway (a script
    that launches every gx command the same way): True on rank 0, which from here on is a plain one-process
    run (the launcher's world variables reset, so nothing waits for the other ranks), and False on the others,
    which should exit at once and touch nothing."""
    if launched_world_size() == 1:
        return True
    if launched_rank() != 0:
        return False
    for name in LAUNCHER_VARS:
        os.environ.pop(name, None)
    return True


def init_dist(device) -> Dist:
    """A `Dist` for this process; joins the launcher's process group (gloo on CPU, NCCL on CUDA).

    `device` is the resolved device of the command; under a launcher a CUDA device becomes
    cuda:LOCAL_RANK, so each process of a box drives its own GPU.
    """
    world = launched_world_size()
    if world == 1:
        return Dist(device=device)
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", timeout=BARRIER_TIMEOUT)
        owned = True
    return Dist(rank=rank, world=world, local_rank=local_rank, local_world=local_world, device=device, _owned=owned)
