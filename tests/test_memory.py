import os
import subprocess
import sys

import pytest

# What a batched forward does with its feature maps: allocate, fill and free blocks of a few MiB
# to tens of MiB, call after call. Prints whether the setting took effect and the minor page
# faults of the last 5 calls (after 5 calls of warm-up).
CALLS = """
import resource, torch
from lbdt_cli.utils.memory import keep_freed_memory
print(keep_freed_memory())
def call():
    maps = [torch.empty(30 * 2**18).fill_(1.0) for _ in range(5)]  # 30 MiB each, like batch-4 stage-2 maps
    del maps
for _ in range(5):
    call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    call()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_CALL = 5 * 30 * 2**20 // 4096


def run(default_malloc: bool) -> tuple[bool, int]:
    # one thread: the pattern then re-faults deterministically under glibc's defaults
    env = {**os.environ, "LBDT_DEFAULT_MALLOC": "1" if default_malloc else "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CALLS], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults) / 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc allocator setting")
def test_freed_feature_maps_are_reused_instead_of_faulted_in_again():
    applied, tuned = run(default_malloc=False)
    not_applied, default = run(default_malloc=True)
    assert applied and not not_applied
    assert default > 0.5 * PAGES_PER_CALL  # glibc's defaults: most of every call's memory is new
    assert tuned < 0.05 * PAGES_PER_CALL  # kept in the heap and reused
