"""One sweep job in its own process: ``python -m hydra_plugins.medsweep_launcher._child JOB RESULT``.

JOB is the launcher's pickled job (Hydra context, the job's config, the task function); the job's
``JobReturn`` is pickled to RESULT. Lightning's DDP starts its other ranks by running this same
command again with ``LOCAL_RANK`` set: those run the same job and write no result.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path

log = logging.getLogger("hydra_plugins.medsweep_launcher")


def _register_resolvers(resolvers: dict) -> None:
    """The launcher's custom resolvers (already wrapped by OmegaConf), where not registered here."""
    from omegaconf.basecontainer import BaseContainer

    for name, wrapped in resolvers.items():
        BaseContainer._resolvers.setdefault(name, wrapped)


def _dump_result(ret, path: Path) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(ret)
    except Exception:  # an exception object that does not pickle: keep its text
        from hydra.core.utils import JobStatus

        if ret.status == JobStatus.FAILED:
            ret.return_value = RuntimeError(
                f"{type(ret._return_value).__name__}: {ret._return_value}"
            )
        else:
            ret.return_value = None
        data = cloudpickle.dumps(ret)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: list[str]) -> int:
    """Run the pickled job of ``argv[1]``; pickle its ``JobReturn`` to ``argv[2]`` on rank 0."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    job_path, result_path = Path(argv[1]), Path(argv[2])
    with job_path.open("rb") as f:
        job = pickle.load(f)
    setup_globals()
    Singleton.set_state(job["singleton_state"])
    _register_resolvers(job["resolvers"])
    config = job["config"]
    HydraConfig.instance().set_config(config)
    rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    ret = run_job(
        hydra_context=job["hydra_context"],
        task_function=job["task_function"],
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if rank == 0:
        _dump_result(ret, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
