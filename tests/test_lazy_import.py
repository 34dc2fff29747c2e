"""Deferred imports: a stand-in bound inside ``deferred`` imports the real module on first use."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import CONF, run_cli

from medsweep.lazy_import import deferred, forwarding, imported


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh package ``lazy_probe`` on sys.path whose code counts its executions in a file."""
    root = tmp_path / "lib"
    (root / "lazy_probe").mkdir(parents=True)
    counter = tmp_path / "executions"
    counter.write_text("0")
    (root / "lazy_probe" / "__init__.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            _count = Path({str(counter)!r})
            _count.write_text(str(int(_count.read_text()) + 1))
            VALUE = 6 * 7

            def double(x):
                return 2 * x
            """
        )
    )
    (root / "lazy_probe" / "sub.py").write_text("from lazy_probe import VALUE\nTWICE = 2 * VALUE\n")
    monkeypatch.syspath_prepend(str(root))
    yield counter
    for name in [m for m in sys.modules if m == "lazy_probe" or m.startswith("lazy_probe.")]:
        del sys.modules[name]


def test_import_binds_a_stand_in_and_first_use_imports_once(package):
    with deferred("lazy_probe"):
        import lazy_probe as bound  # the import statement must not run the module
    assert package.read_text() == "0"
    assert "lazy_probe" not in sys.modules  # after the block: an ordinary import again
    assert not imported("lazy_probe")
    assert bound.VALUE == 42  # first use: imports the real module
    assert package.read_text() == "1"
    assert imported("lazy_probe")
    import lazy_probe
    from lazy_probe import VALUE

    assert VALUE == 42 and lazy_probe is not bound and lazy_probe.VALUE == bound.VALUE
    bound.SHARED = [1]  # the stand-in forwards writes: both names reach the same state
    assert lazy_probe.SHARED is bound.SHARED
    assert package.read_text() == "1"  # once


def test_use_inside_the_block_imports_the_real_module(package):
    with deferred("lazy_probe"):
        import lazy_probe as bound

        assert bound.VALUE == 42
        import lazy_probe

        assert not isinstance(lazy_probe, type(bound))  # the real one is in sys.modules now
    assert package.read_text() == "1"
    import lazy_probe.sub

    assert lazy_probe.sub.TWICE == 84 and package.read_text() == "1"


def test_a_module_that_fails_fails_at_first_use_and_stays_out_of_sys_modules(package, tmp_path):
    init = tmp_path / "lib" / "lazy_probe" / "__init__.py"
    init.write_text(init.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    with deferred("lazy_probe"):
        import lazy_probe as bound
    with pytest.raises(RuntimeError, match="broken on purpose"):
        bound.VALUE  # noqa: B018
    assert "lazy_probe" not in sys.modules
    with pytest.raises(RuntimeError, match="broken on purpose"):
        import lazy_probe  # noqa: F401


def test_deferred_leaves_imported_and_missing_modules_alone():
    with deferred("json"):
        import json as inside
    assert inside is json and sys.modules["json"] is json
    with deferred("no_such_module_anywhere"), pytest.raises(ModuleNotFoundError):
        import no_such_module_anywhere  # noqa: F401
    assert "no_such_module_anywhere" not in sys.modules
    import os.path

    with deferred("os.path"):
        import os.path as inside
    assert inside is os.path and sys.modules["os.path"] is os.path
    with deferred("no_such_package_anywhere.sub"), pytest.raises(ModuleNotFoundError):
        import no_such_package_anywhere.sub  # noqa: F401


def test_a_submodule_is_deferred_and_its_attributes_answer_without_importing(package):
    """``deferred("package.sub")``: the import statement and the parent's attribute give the
    stand-in; the names in ``attributes`` are answered without importing; first use imports the
    real submodule, which the parent then holds."""
    import lazy_probe

    with deferred("lazy_probe.sub", attributes={"EXTRA": "held"}):
        import lazy_probe.sub
        from lazy_probe import sub as bound

        assert bound is lazy_probe.sub  # the parent's attribute is the stand-in too
        assert hasattr(bound, "EXTRA") and bound.EXTRA == "held"
    assert "lazy_probe.sub" not in sys.modules and not imported("lazy_probe.sub")
    assert "sub" not in vars(lazy_probe)  # as before the block
    assert bound.TWICE == 84  # first use: the real submodule
    real = sys.modules["lazy_probe.sub"]
    assert imported("lazy_probe.sub") and lazy_probe.sub is real and real is not bound
    assert not hasattr(real, "EXTRA")  # the held names were the stand-in's only
    assert package.read_text() == "1"  # the parent package ran once


def test_forwarding_imports_its_module_at_the_first_call(package):
    double = forwarding("lazy_probe", "double")
    assert double.__name__ == "double" and "lazy_probe" not in sys.modules
    assert package.read_text() == "0"
    assert double(21) == 42 and double(x=4) == 8
    assert package.read_text() == "1" and imported("lazy_probe")


def test_timm_imports_a_deferred_wandb_without_running_it():
    """timm's ``import wandb`` binds the stand-in; its first use imports the whole library once."""
    code = textwrap.dedent(
        """
        import importlib.metadata, json, sys
        from medsweep.lazy_import import deferred, forwarding, imported
        with deferred("wandb"):
            import timm
        bound = sys.modules["timm.utils.summary"].wandb
        out = {"after_timm": imported("wandb"), "sdk": "wandb.sdk" in sys.modules}
        out["version"] = bound.__version__ == importlib.metadata.version("wandb")
        out["after_use"] = imported("wandb")
        import wandb
        import wandb.sdk
        out["same"] = bound.init is wandb.init is wandb.sdk.wandb_init.init
        out["data_types"] = wandb.sdk.data_types is sys.modules["wandb.sdk.data_types"]
        print(json.dumps(out))
        """
    )
    result = run_cli(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "after_timm": False,
        "sdk": False,
        "version": True,
        "after_use": True,
        "same": True,
        "data_types": True,
    }


def test_a_csv_run_leaves_wandb_unrun_and_a_later_wandb_run_in_the_process_logs(tmp_path):
    """A run without the W&B logger never imports W&B; a W&B run after it in the same process
    (a sweep's next job) imports it as usual and writes its offline run."""
    common = [
        "model=small_cnn",
        "data.image_size=16",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "callbacks.progress_bar=null",
    ]
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from medsweep.lazy_import import imported
        from medsweep.pipeline import compose_config, train
        common = {common!r}
        out = {{}}
        csv = train(compose_config([*common, "paths.output_dir={tmp_path / "csv"}"],
                                   Path({str(CONF)!r})))
        out["csv"] = [csv["status"], imported("wandb"), "wandb.sdk" in sys.modules]
        run = train(compose_config([*common, "logger=wandb", "logger.wandb.project=lazy",
                                    "paths.output_dir={tmp_path / "wb"}"], Path({str(CONF)!r})))
        out["wandb"] = [run["status"], imported("wandb"), (run.get("wandb") or {{}}).get("id")]
        print(json.dumps(out))
        """
    )
    env_code = (
        "import os; "
        "os.environ.update(WANDB_MODE='offline', "
        f"WANDB_DIR={str(tmp_path)!r}, WANDB_CACHE_DIR={str(tmp_path / 'c')!r}, "
        f"WANDB_CONFIG_DIR={str(tmp_path / 'k')!r}, WANDB_DATA_DIR={str(tmp_path / 'd')!r}); "
        "os.environ.pop('WANDB_API_KEY', None)\n"
    )
    result = run_cli(["-c", env_code + code])
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["csv"] == ["ok", False, False]
    status, wandb_imported, run_id = out["wandb"]
    assert (status, wandb_imported) == ("ok", True)
    assert run_id and list((tmp_path / "wb").rglob(f"run-{run_id}.wandb"))
