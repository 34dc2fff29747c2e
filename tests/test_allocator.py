"""trainer.keep_freed_memory: glibc keeps freed blocks, so repeated steps stop faulting in pages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medsweep.allocator import glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="glibc's mallopt only")

# the run's trainer is built (which applies trainer.keep_freed_memory), then a step's worth of
# large blocks (16 x 8 MiB, like activations and gradients) is allocated, written and freed 20
# times; printed: the process's minor page faults over those 20 steps
STEPS = """
import json, resource, sys, tempfile, torch
from medsweep.pipeline import build_trainer, compose_config
run_dir = tempfile.mkdtemp()
cfg = compose_config([f"trainer.keep_freed_memory={sys.argv[1]}", f"paths.output_dir={run_dir}"])
build_trainer(cfg, run_dir, [])
def step():
    blocks = [torch.ones(2 * 2**20) for _ in range(16)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(keep: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, str(keep).lower()], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["faults"]


def test_kept_memory_is_reused_without_new_page_faults():
    default, kept = _faults(False), _faults(True)
    pages = 20 * 16 * 8 * 2**20 // 4096  # every block's pages, every step
    # kept: the blocks come back from the heap without fresh pages (measured: 6-8 k of 655 k);
    # glibc's default gives them back to the system at each free and faults most of them in
    # again (measured 655 k; 35 k when earlier frees had left its dynamic thresholds high)
    assert kept < pages // 20, (kept, pages)
    assert kept < default, (kept, default)
