"""``hydra/launcher=ray``: hydra-ray-launcher's launcher, or a clear stop when the extra is missing."""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

INSTALL = "pip install 'medsweep[ray]'"


class RayGpuLauncher(Launcher):
    """Hands the sweep to hydra-ray-launcher's ``RayLauncher`` (``ray.remote`` per job)."""

    def __init__(self, ray: Any) -> None:
        try:
            from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
        except ImportError as err:
            raise ImportError(
                f"hydra/launcher=ray needs the optional Ray extra ({err}): {INSTALL}"
            ) from err
        self.launcher = RayLauncher(ray=ray)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Pass the sweep's context on to the Ray launcher."""
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run the jobs on Ray."""
        return self.launcher.launch(job_overrides, initial_job_idx)
