"""hydra/launcher=local_gpus on a simulated device list (CPU), and the cluster launchers' configs.

The pool's leases are real file locks; the sweeps are real ``-m`` runs in their own processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import CONF, ROOT, run_cli
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hydra_plugins.medsweep_launcher._devices import DevicePool, resolve_devices
from hydra_plugins.medsweep_launcher.local_gpus import describe_exit, usable_cores
from medsweep.config import register_resolvers

# a Hydra app that records where and when it ran; x == crash kills its own process
APP = """
import json, os, time
import hydra

@hydra.main(config_path=None, config_name=None, version_base="1.3")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig
    start = time.time()
    time.sleep(float(cfg.sleep))
    if cfg.get("crash") == cfg.x:
        os.kill(os.getpid(), 9)
    record = {"x": cfg.x, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "omp": os.environ.get("OMP_NUM_THREADS"),
              "job_cpus": os.environ.get("MEDSWEEP_JOB_CPUS"), "pid": os.getpid(),
              "start": start, "end": time.time()}
    out = HydraConfig.get().runtime.output_dir
    with open(os.path.join(out, "job.json"), "w") as f:
        json.dump(record, f)

main()
"""

HOLDER = """
import sys, time
from hydra_plugins.medsweep_launcher._devices import DevicePool
lease = DevicePool(["0"], sys.argv[1]).acquire()
print("held" if lease else "busy", flush=True)
time.sleep(60)
"""


def sweep_cmd(app: Path, sweep_dir: Path, locks: Path, *args: str) -> list[str]:
    """The command line of a local_gpus sweep of the test app on the simulated pool [0, 1]."""
    return [
        sys.executable,
        str(app),
        "-m",
        "hydra/launcher=local_gpus",
        "hydra.launcher.gpus=[0,1]",
        f"hydra.launcher.lock_dir={locks}",
        f"hydra.sweep.dir={sweep_dir}",
        *args,
    ]


def jobs_file(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / ".local_gpus" / "jobs.json").read_text())


def overlapping(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(ordered, ordered[1:]))


def test_pool_spreads_over_devices_then_packs(tmp_path: Path) -> None:
    pool = DevicePool(["0", "1"], tmp_path, jobs_per_gpu=2)
    leases = [pool.acquire() for _ in range(4)]
    assert [(lease.devices, lease.slots) for lease in leases] == [
        (["0"], [0]),
        (["1"], [0]),
        (["0"], [1]),
        (["1"], [1]),
    ]
    assert pool.capacity == 4
    assert pool.acquire() is None  # both slots of both devices are held
    leases[2].release()
    again = pool.acquire()
    assert (again.devices, again.slots) == (["0"], [1])


def test_gpus_per_job_takes_distinct_devices_all_or_nothing(tmp_path: Path) -> None:
    pool = DevicePool(["0", "1", "2"], tmp_path, gpus_per_job=2)
    first = pool.acquire()
    assert first.devices == ["0", "1"] and first.cuda_visible_devices == "0,1"
    assert pool.acquire() is None  # one device left: not enough, and it is not kept
    single = DevicePool(["2"], tmp_path).acquire()
    assert single is not None and single.devices == ["2"]


def test_lease_ends_when_its_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        pool = DevicePool(["0"], tmp_path)
        assert pool.acquire() is None  # another process holds device 0
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        lease = pool.acquire()
        assert lease is not None and lease.devices == ["0"]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_device_list_errors_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"hydra\.launcher\.gpus is empty"):
        resolve_devices([])
    with pytest.raises(ValueError, match=r"hydra\.launcher\.gpus=.*lists \['1'\] twice"):
        resolve_devices([0, 1, 1])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5a1f")
    assert resolve_devices(None) == ["3", "GPU-5a1f"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="no CUDA device found.*hydra.launcher.gpus"):
        resolve_devices(None)
    with pytest.raises(ValueError, match=r"hydra\.launcher\.jobs_per_gpu=0"):
        DevicePool(["0"], "/tmp", jobs_per_gpu=0)
    assert describe_exit(-9).startswith("killed by signal SIGKILL")
    assert describe_exit(3) == "exited with code 3"


def test_two_concurrent_sweeps_never_share_a_device(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    locks = tmp_path / "locks"
    sweeps = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            sweep_cmd(app, d, locks, "+x=1,2,3", "+sleep=1.5"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d in sweeps
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    by_device: dict[str, list[tuple[float, float]]] = {}
    threads = max(1, usable_cores() // 2)  # two devices, one job each: two jobs at a time
    for sweep_dir, output in zip(sweeps, outputs):
        jobs = jobs_file(sweep_dir)
        assert [j["status"] for j in jobs] == ["ok", "ok", "ok"]
        for job in jobs:
            ran = json.loads((Path(job["run_dir"]) / "job.json").read_text())
            # the process saw exactly its leased device, and ran inside its lease
            assert ran["cuda"] == ",".join(job["devices"])
            assert ran["pid"] == job["pid"]
            assert job["leased"] <= ran["start"] and ran["end"] <= job["released"]
            assert ran["omp"] == str(threads)
            assert ran["job_cpus"] == str(threads)  # the loader's budget (data.num_workers=auto)
            assert f"#{job['job']} on GPU {job['devices'][0]} (pid {job['pid']})" in output
            by_device.setdefault(job["devices"][0], []).append((job["leased"], job["released"]))
    assert sorted(by_device) == ["0", "1"]
    assert sum(len(v) for v in by_device.values()) == 6
    for device, intervals in by_device.items():
        assert not overlapping(intervals), f"device {device} was booked twice: {intervals}"


def test_train_grid_on_two_devices_survives_a_killed_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance run: a 4-job grid on a simulated 2-device pool; seed 3's process is killed
    (SIGKILL) at its first training batch, the others finish."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))  # the jobs import crash_callback
    monkeypatch.setenv("WANDB_MODE", "disabled")
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        [
            "train.py",
            "-m",
            "hydra/launcher=local_gpus",
            "hydra.launcher.gpus=[0,1]",
            "hydra.launcher.cpus_per_job=1",
            f"hydra.launcher.lock_dir={tmp_path / 'locks'}",
            f"hydra.sweep.dir={sweep_dir}",
            "trainer=debug",
            "data.image_size=16",
            "data.batch_size=16",
            "model=small_cnn",
            "callbacks.progress_bar=null",
            "seed=1,2,3,4",
            "+callbacks.crash._target_=crash_callback.KillOnSeed",
            "+callbacks.crash.seed=${seed}",
            "+callbacks.crash.kill_seed=3",
        ]
    )
    assert result.returncode != 0  # the sweep reports its failed job at the end
    assert "ChildProcessError" in result.stderr and "SIGKILL" in result.stderr
    jobs = {j["job"]: j for j in jobs_file(sweep_dir)}
    records = {}
    for job in jobs.values():
        records[job["job"]] = json.loads((Path(job["run_dir"]) / "metrics.json").read_text())
    seeds = {n: r["seed"] for n, r in records.items()}
    assert sorted(seeds.values()) == [1, 2, 3, 4]
    for n, record in records.items():
        if record["seed"] == 3:
            assert record["status"] == "failed"
            assert "killed by signal SIGKILL" in record["error"]
            assert record["process"]["pid"] == jobs[n]["pid"]
            assert record["process"]["finished"]
            assert jobs[n]["returncode"] == -signal.SIGKILL
        else:
            assert record["status"] == "ok", record["error"]
            assert jobs[n]["returncode"] == 0
            assert record["val"]["acc"] >= 0
    assert {j["devices"][0] for j in jobs.values()} == {"0", "1"}
    for device in ("0", "1"):
        spans = [(j["leased"], j["released"]) for j in jobs.values() if j["devices"] == [device]]
        assert not overlapping(spans)
    for n, job in jobs.items():
        assert f"#{n} on GPU {job['devices'][0]} (pid {job['pid']})" in result.stdout
    # the killed job's console (faulthandler/Lightning output up to the kill) is beside its record
    assert (Path(jobs[2]["run_dir"]) / "console.log").is_file()


def compose_hydra(overrides: list[str]):
    """The composed config with its hydra node (launcher settings), as train.py would see it."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_composes_against_submitit_schema() -> None:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    cfg = compose_hydra(["hydra/launcher=slurm", "+local=example_cluster", "hydra.launcher.qos=hi"])
    # composed on submitit's schema; merged again on it from plain values (Hydra's plugin scan
    # loads its own copy of the class)
    assert OmegaConf.get_type(cfg.hydra.launcher).__name__ == "SlurmQueueConf"
    plain = OmegaConf.to_container(cfg.hydra.launcher)
    launcher = OmegaConf.merge(OmegaConf.structured(SlurmQueueConf), plain)
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert (launcher.timeout_min, launcher.mem_gb, launcher.array_parallelism) == (120, 32, 64)
    # the site file wins over slurm.yaml, the command line over both
    assert (launcher.partition, launcher.account, launcher.qos) == ("gpu", "my_project", "hi")
    assert launcher.setup[0] == "module load cuda/12.4"
    with pytest.raises(ConfigCompositionException, match="partitio"):
        compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partitio=gpu"])


def test_local_gpus_config_is_typed() -> None:
    cfg = compose_hydra(["hydra/launcher=local_gpus", "hydra.launcher.gpus=[0,1]"])
    assert list(cfg.hydra.launcher.gpus) == ["0", "1"]
    assert cfg.hydra.launcher.jobs_per_gpu == 1
    with pytest.raises(ConfigCompositionException, match="gpu_list"):
        compose_hydra(["hydra/launcher=local_gpus", "hydra.launcher.gpu_list=[0]"])


def test_ray_launcher_composes_without_the_plugin_and_names_the_extra() -> None:
    """Decision: hydra/launcher=ray composes everywhere; launching without the extra stops at once
    with the pip command (hydra-ray-launcher is never installed in the dev environment)."""
    cfg = compose_hydra(["hydra/launcher=ray"])
    assert cfg.hydra.launcher.ray.remote.num_gpus == 1
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
    except ImportError:
        from hydra_plugins.medsweep_launcher.ray_gpus import RayGpuLauncher

        with pytest.raises(ImportError, match=r"pip install 'medsweep\[ray\]'"):
            RayGpuLauncher(ray=cfg.hydra.launcher.ray)
    else:
        pytest.skip("hydra-ray-launcher is installed here")


def test_ddp_trainer_composes_and_checks() -> None:
    from medsweep.config_check import check_config

    cfg = compose_hydra(["trainer=ddp"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm is True
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == "auto"
    assert cfg.trainer.precision == compose_hydra(["trainer=gpu"]).trainer.precision
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    cfg.paths.output_dir = "/tmp/unused"
    check_config(cfg)  # every key is a Trainer argument


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_plugin_is_listed_by_hydra() -> None:
    result = run_cli(["train.py", "--info", "plugins"])
    assert "LocalGpusLauncher" in result.stdout and "RayGpuLauncher" in result.stdout


def test_job_processes_do_not_outlive_the_sweep(tmp_path: Path) -> None:
    """Every job's process is gone once the sweep returns (no stray lease holders)."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    out = subprocess.run(
        sweep_cmd(app, tmp_path / "s", tmp_path / "locks", "+x=1,2", "+sleep=0", "+crash=2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    jobs = jobs_file(tmp_path / "s")
    assert [j["status"] for j in jobs] == ["ok", "failed"]
    assert "killed by signal SIGKILL" in jobs[1]["error"]
    time.sleep(0.2)
    for job in jobs:
        with pytest.raises(ProcessLookupError):
            os.kill(job["pid"], 0)
    pool = DevicePool(["0", "1"], tmp_path / "locks")
    assert pool.acquire() is not None and pool.acquire() is not None  # both slots free again
