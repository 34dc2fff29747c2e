"""The ``hydra/launcher=local_gpus`` config node (typed: a misspelt key stops the sweep)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf reads these)

from hydra.core.config_store import ConfigStore


@dataclass
class LocalGpusLauncherConf:
    """Run each sweep job in a fresh process on a device leased from a pool of GPUs."""

    _target_: str = "hydra_plugins.medsweep_launcher.local_gpus.LocalGpusLauncher"
    # device ids as CUDA_VISIBLE_DEVICES takes them (indices or GPU-/MIG- UUIDs); null: the
    # parent's CUDA_VISIBLE_DEVICES if set, else every device torch sees
    gpus: Optional[List[str]] = None  # noqa: UP006, UP045
    # jobs that may share one device at a time (small models); counts jobs of every sweep
    jobs_per_gpu: int = 1
    # devices given to one job (trainer=ddp trainer.devices=<n> needs n)
    gpus_per_job: int = 1
    # CPU threads per job (OMP_NUM_THREADS, MKL_NUM_THREADS); null: usable cores // parallel jobs
    cpus_per_job: Optional[int] = None  # noqa: UP045
    # lock files of the leases; one folder per machine, shared by every sweep on it
    lock_dir: str = "${oc.env:MEDSWEEP_GPU_LOCK_DIR,/tmp/medsweep-gpu-locks}"
    # false: each job's console goes to <job folder>/console.log; true: to this terminal
    console: bool = False
    # extra environment variables of every job
    env: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(
    group="hydra/launcher",
    name="local_gpus",
    node=LocalGpusLauncherConf,
    provider="medsweep",
)
