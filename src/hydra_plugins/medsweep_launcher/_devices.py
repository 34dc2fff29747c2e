"""A pool of GPU slots leased through file locks, shared by every sweep on one machine.

Each (device, slot) is a lock file ``<lock_dir>/gpu-<id>.slot-<k>.lock`` held with ``flock``. The
kernel drops a lock when the last descriptor of it closes, so a lease ends however its holders end
(exit, crash, SIGKILL): nothing is left to clean up. The launcher passes the descriptor to the job's
process, so a lease outlives the launcher while its job still runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def visible_devices() -> list[str]:
    """The devices this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every device
    torch counts (none without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and not d.strip().startswith("-")]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def resolve_devices(gpus: list | None) -> list[str]:
    """The pool's device ids from ``hydra.launcher.gpus`` (null: auto-detect), checked."""
    devices = [str(g).strip() for g in gpus] if gpus is not None else visible_devices()
    if not devices:
        where = "hydra.launcher.gpus is empty" if gpus is not None else "no CUDA device found"
        raise ValueError(
            f"{where}: set hydra.launcher.gpus=[0,1,...] (ids as CUDA_VISIBLE_DEVICES takes them), "
            "or use hydra/launcher=joblib to run jobs in parallel on CPUs"
        )
    duplicated = sorted({d for d in devices if devices.count(d) > 1})
    if duplicated:
        raise ValueError(
            f"hydra.launcher.gpus={devices} lists {duplicated} twice; "
            "use hydra.launcher.jobs_per_gpu to put several jobs on one device"
        )
    return devices


def _lock_name(device: str, slot: int) -> str:
    return f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.slot-{slot}.lock"


@dataclass
class Lease:
    """Devices held for one job: the held (device, slot) pairs and their open lock descriptors."""

    devices: list[str]
    slots: list[int]
    fds: list[int] = field(default_factory=list)
    acquired: float = 0.0
    released: float | None = None

    @property
    def cuda_visible_devices(self) -> str:
        """The value of ``CUDA_VISIBLE_DEVICES`` for the job."""
        return ",".join(self.devices)

    def release(self) -> None:
        """Close this process's descriptors (the lock ends once the job's process is gone too)."""
        if self.released is None:
            self.released = time.time()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


class DevicePool:
    """``jobs_per_gpu`` slots on each device; a lease takes ``gpus_per_job`` distinct devices.

    Slots are tried slot 0 of every device first, so jobs spread over devices before they share one.
    """

    def __init__(
        self, devices: list[str], lock_dir: str | Path, jobs_per_gpu: int = 1, gpus_per_job: int = 1
    ) -> None:
        if int(jobs_per_gpu) < 1:
            raise ValueError(f"hydra.launcher.jobs_per_gpu={jobs_per_gpu} must be >= 1")
        if not 1 <= int(gpus_per_job) <= len(devices):
            raise ValueError(
                f"hydra.launcher.gpus_per_job={gpus_per_job} must be between 1 and the "
                f"{len(devices)} device(s) of the pool {devices}"
            )
        self.devices = list(devices)
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.gpus_per_job = int(gpus_per_job)
        self.lock_dir = Path(lock_dir)
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.lock_dir, 0o1777)  # one folder for every user's sweeps on the machine
        except PermissionError:
            pass  # made by another user: fine if its mode lets us create files
        except OSError as err:
            raise ValueError(f"hydra.launcher.lock_dir={self.lock_dir}: {err}") from err

    @property
    def capacity(self) -> int:
        """How many jobs the pool runs at once when no other sweep holds a slot."""
        return len(self.devices) // self.gpus_per_job * self.jobs_per_gpu

    def _try_lock(self, device: str, slot: int) -> int | None:
        path = self.lock_dir / _lock_name(device, slot)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise ValueError(f"hydra.launcher.lock_dir={self.lock_dir}: {err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # who holds it, for a person looking at the folder
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {time.ctime()}\n".encode(), 0)
        except OSError:
            pass
        return fd

    def acquire(self) -> Lease | None:
        """A lease of ``gpus_per_job`` free devices, or None when too few are free now."""
        held: list[tuple[str, int, int]] = []
        for slot in range(self.jobs_per_gpu):
            for device in self.devices:
                if any(d == device for d, _, _ in held):
                    continue
                fd = self._try_lock(device, slot)
                if fd is not None:
                    held.append((device, slot, fd))
                    if len(held) == self.gpus_per_job:
                        return Lease(
                            devices=[d for d, _, _ in held],
                            slots=[s for _, s, _ in held],
                            fds=[f for _, _, f in held],
                            acquired=time.time(),
                        )
        for _, _, fd in held:
            os.close(fd)
        return None
