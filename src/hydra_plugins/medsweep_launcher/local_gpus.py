"""``hydra/launcher=local_gpus``: each sweep job in a fresh process on a GPU leased from a pool.

The launcher keeps up to ``len(gpus) // gpus_per_job * jobs_per_gpu`` jobs running. A job's process
gets ``CUDA_VISIBLE_DEVICES`` (its leased devices, so its ``cuda:0`` is its own GPU) and a CPU
thread count; the lease is a file lock the job's process holds too, so it ends whatever way the job
ends and two sweeps on one machine never book one slot twice. A job whose process dies (segfault,
SIGKILL, exit) fails alone: its ``metrics.json``, if it still says running, is rewritten as failed
with the exit signal or code, and the other jobs go on. ``<sweep dir>/.local_gpus/jobs.json``
says which job ran on which device, when, and how it ended.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations
import collections
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.medsweep_launcher._devices import DevicePool, Lease, resolve_devices

log = logging.getLogger(__name__)

STATE_DIR = ".local_gpus"
JOBS_FILE = "jobs.json"
CONSOLE_FILE = "console.log"
# how often the launcher looks at its jobs and for free devices
POLL_S = 0.2
# seconds a job gets to stop after SIGTERM when the sweep itself is interrupted
STOP_GRACE_S = 10.0


def usable_cores() -> int:
    """Physical cores this process may run on (logical CPUs when psutil cannot tell)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return max(1, min(physical or allowed or 1, allowed or 1))


def describe_exit(returncode: int) -> str:
    """``-9`` -> ``killed by signal SIGKILL``; ``3`` -> ``exited with code 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        hint = " (also what the out-of-memory killer sends)" if name == "SIGKILL" else ""
        return f"killed by signal {name}{hint}"
    return f"exited with code {returncode}"


def _tail(path: Path, lines: int = 40) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:]) or None


def record_crash(
    run_dir: Path,
    error: str,
    config: DictConfig,
    overrides: Sequence[str],
    pid: int,
    tail: str | None,
) -> str | None:
    """Mark the job's metrics.json failed when its process died while the record said running.

    A job that died before writing a record gets a failed one. Returns the status written, or None
    when the record was left as it was (already ok/failed, or its process still runs).
    """
    try:
        from medsweep.results import (
            METRICS_FILE,
            RunRecord,
            parse_overrides,
            process_alive,
            write_json_atomic,
        )
    except ImportError:  # the launcher runs another Hydra app: no medsweep record to mend
        return None
    path = Path(run_dir) / METRICS_FILE
    finished = dt.datetime.now().isoformat(timespec="seconds")
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            if data.get("status") != "running" or process_alive(data.get("process") or {}):
                return None
            data.update(status="failed", error=error, traceback=data.get("traceback") or tail)
            data["process"] = {**(data.get("process") or {}), "finished": finished}
            write_json_atomic(path, data)
            return "failed"
    if OmegaConf.select(config, "seed") is None or OmegaConf.select(config, "fold") is None:
        return None  # not a medsweep training run: no record to write
    record = RunRecord.start(
        parse_overrides(list(overrides)),
        seed=int(OmegaConf.select(config, "seed", default=0) or 0),
        fold=int(OmegaConf.select(config, "fold.index", default=0) or 0),
        n_folds=int(OmegaConf.select(config, "fold.n_folds", default=1) or 1),
        run_dir=Path(run_dir),
    )
    record.status, record.error, record.traceback = "failed", error, tail
    record.process = {**record.process, "pid": pid, "finished": finished}
    record.write(Path(run_dir))
    return "failed"


def _custom_resolvers() -> dict[str, Any]:
    """The app's own OmegaConf resolvers (Hydra's and OmegaConf's are registered in every job)."""
    import cloudpickle
    from omegaconf.basecontainer import BaseContainer

    found = {}
    for name, wrapped in BaseContainer._resolvers.items():
        if name.startswith("oc.") or name in ("now", "hydra", "python_version"):
            continue
        try:
            cloudpickle.dumps(wrapped)
        except Exception as err:  # a job that needs it fails naming the resolver
            log.warning("resolver %r cannot be sent to the jobs (%s)", name, err)
            continue
        found[name] = wrapped
    return found


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    config: DictConfig
    run_dir: Path
    job_file: Path
    result_file: Path
    proc: subprocess.Popen | None = None
    lease: Lease | None = None
    out: IO[bytes] | None = None
    started: float | None = None
    ret: JobReturn | None = None
    status: str = "pending"
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        lease = self.lease
        return {
            "job": self.idx,
            "overrides": list(filter_overrides(self.overrides)),
            "run_dir": str(self.run_dir),
            "devices": lease.devices if lease else None,
            "slots": lease.slots if lease else None,
            "pid": self.proc.pid if self.proc else None,
            "returncode": self.proc.returncode if self.proc else None,
            "leased": lease.acquired if lease else None,
            "released": lease.released if lease else None,
            "status": self.status,
            "error": self.error,
        }


class LocalGpusLauncher(Launcher):
    """Runs sweep jobs in parallel, one fresh process per job, on devices leased from a pool."""

    def __init__(
        self,
        gpus: Sequence[Any] | None = None,
        jobs_per_gpu: int = 1,
        gpus_per_job: int = 1,
        cpus_per_job: int | None = None,
        lock_dir: str = "/tmp/medsweep-gpu-locks",
        console: bool = False,
        env: dict[str, Any] | None = None,
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.jobs_per_gpu = jobs_per_gpu
        self.gpus_per_job = gpus_per_job
        self.cpus_per_job = cpus_per_job
        self.lock_dir = lock_dir
        self.console = console
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what ``launch`` needs (Hydra calls this once per sweep)."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run every job; return their results in the order of ``job_overrides``."""
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if self.cpus_per_job is not None and int(self.cpus_per_job) < 1:
            raise ValueError(
                f"hydra.launcher.cpus_per_job={self.cpus_per_job} must be >= 1 or null"
            )
        pool = DevicePool(
            resolve_devices(self.gpus), self.lock_dir, self.jobs_per_gpu, self.gpus_per_job
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        state_dir = sweep_dir / STATE_DIR
        state_dir.mkdir(parents=True, exist_ok=True)
        parallel = max(1, min(pool.capacity, len(job_overrides)))
        threads = int(self.cpus_per_job or max(1, usable_cores() // parallel))
        log.info(
            "local_gpus: %d job(s) on devices %s (%d per device, %d device(s) per job), "
            "%d CPU thread(s) each; sweep folder %s",
            len(job_overrides),
            ",".join(pool.devices),
            pool.jobs_per_gpu,
            pool.gpus_per_job,
            threads,
            sweep_dir,
        )
        jobs = [
            self._prepare(initial_job_idx + i, list(o), state_dir)
            for i, o in enumerate(job_overrides)
        ]
        pending, running = collections.deque(jobs), []
        waiting_logged = False
        try:
            while pending or running:
                while pending and len(running) < pool.capacity:
                    lease = pool.acquire()
                    if lease is None:
                        if not running and not waiting_logged:
                            log.info("every device slot is held by another sweep; waiting")
                            waiting_logged = True
                        break
                    job = pending.popleft()
                    self._start(job, lease, threads)
                    running.append(job)
                for job in [j for j in running if j.proc.poll() is not None]:
                    running.remove(job)
                    self._finish(job)
                    self._write_state(state_dir, jobs)
                time.sleep(POLL_S)
        finally:
            self._stop(running)
            self._write_state(state_dir, jobs)
        for job in jobs:
            log.info(
                "#%d GPU %s: %s%s",
                job.idx,
                job.lease.cuda_visible_devices if job.lease else "-",
                job.status,
                f" ({job.error})" if job.error else "",
            )
        return [job.ret for job in jobs]

    def _prepare(self, idx: int, overrides: list[str], state_dir: Path) -> _Job:
        """The job's config, its folder, and its pickled form for the child process."""
        import cloudpickle

        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)  # the job folder may interpolate hydra:...
        try:
            run_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(config, "hydra.sweep.subdir")
            )
        finally:
            HydraConfig.instance().cfg = previous
        job = _Job(
            idx=idx,
            overrides=overrides,
            config=config,
            run_dir=run_dir.absolute(),
            job_file=state_dir / f"job-{idx}.pkl",
            result_file=state_dir / f"job-{idx}.result.pkl",
        )
        job.result_file.unlink(missing_ok=True)
        payload = {
            "hydra_context": self.hydra_context,
            "config": config,
            "task_function": self.task_function,
            "singleton_state": Singleton.get_state(),
            "resolvers": _custom_resolvers(),
        }
        job.job_file.write_bytes(cloudpickle.dumps(payload))
        return job

    def _start(self, job: _Job, lease: Lease, threads: int) -> None:
        env = {**os.environ, **self.env}
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # ids as nvidia-smi numbers them
        env["CUDA_VISIBLE_DEVICES"] = lease.cuda_visible_devices
        # torch threads, and the CPUs the job may use (its data loader's workers: MEDSWEEP_JOB_CPUS)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MEDSWEEP_JOB_CPUS"):
            env[name] = str(threads)
        if not self.console:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            job.out = (job.run_dir / CONSOLE_FILE).open("wb")
        cmd = [
            sys.executable,
            "-m",
            f"{__package__}._child",
            str(job.job_file),
            str(job.result_file),
        ]
        job.lease, job.started, job.status = lease, time.time(), "running"
        try:
            job.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=os.getcwd(),
                stdout=job.out,
                stderr=subprocess.STDOUT if job.out else None,
                pass_fds=tuple(lease.fds),  # the job holds its lease too: it ends with the job
            )
        except BaseException:
            lease.release()
            raise
        log.info(
            "#%d on GPU %s (pid %d): %s",
            job.idx,
            lease.cuda_visible_devices,
            job.proc.pid,
            " ".join(filter_overrides(job.overrides)),
        )

    def _finish(self, job: _Job) -> None:
        """Release the lease; read the job's result, or record how its process died."""
        assert job.proc is not None and job.lease is not None
        job.lease.release()
        if job.out is not None:
            job.out.close()
        returncode = job.proc.returncode
        ret = None
        if job.result_file.is_file():
            import pickle

            with job.result_file.open("rb") as f:
                ret = pickle.load(f)
            job.result_file.unlink(missing_ok=True)
        job.job_file.unlink(missing_ok=True)
        seconds = time.time() - (job.started or time.time())
        if ret is not None:
            job.ret = ret
            job.status = "ok" if ret.status == JobStatus.COMPLETED else "failed"
            if job.status == "failed":
                job.error = f"{type(ret._return_value).__name__}: {ret._return_value}"
            if returncode != 0:  # e.g. a driver crash at exit, after the job had finished
                log.warning("#%d finished, then its process %s", job.idx, describe_exit(returncode))
            log.info(
                "#%d on GPU %s: %s in %.0f s",
                job.idx,
                job.lease.cuda_visible_devices,
                job.status,
                seconds,
            )
            return
        why = describe_exit(returncode) if returncode != 0 else "exited without a result"
        job.status = "failed"
        job.error = f"job #{job.idx} on GPU {job.lease.cuda_visible_devices}: its process {why}"
        tail = _tail(job.run_dir / CONSOLE_FILE) if not self.console else None
        try:
            record_crash(job.run_dir, job.error, job.config, job.overrides, job.proc.pid, tail)
        except Exception as err:  # the sweep goes on whatever the record's state
            log.warning("#%d: could not mark its metrics.json failed (%s)", job.idx, err)
        log.error("#%d failed after %.0f s: %s", job.idx, seconds, job.error)
        task_cfg = job.config.copy()
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        job.ret = JobReturn(
            overrides=job.overrides,
            cfg=task_cfg,
            hydra_cfg=job.config,
            working_dir=os.getcwd(),
            task_name=str(job.config.hydra.job.name),
            status=JobStatus.FAILED,
            _return_value=ChildProcessError(job.error),
        )

    def _stop(self, running: list[_Job]) -> None:
        """The sweep itself stops (Ctrl-C, an error): stop its running jobs and record them."""
        for job in running:
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for job in running:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            self._finish(job)

    @staticmethod
    def _write_state(state_dir: Path, jobs: list[_Job]) -> None:
        """``jobs.json``: every job of this sweep, its devices, lease times and end (merged with
        earlier batches of the same sweep)."""
        path = state_dir / JOBS_FILE
        known: dict[int, dict] = {}
        if path.is_file():
            try:
                known = {int(j["job"]): j for j in json.loads(path.read_text())}
            except (OSError, ValueError, KeyError, TypeError):
                known = {}
        known.update({job.idx: job.describe() for job in jobs})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([known[k] for k in sorted(known)], indent=2))
        tmp.replace(path)
