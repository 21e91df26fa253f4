import os
import subprocess
import sys

import pytest

# Where a 30 MiB block (the size of a batch-4 stage-2 feature map) comes from: glibc's defaults
# map it separately and unmap it on free; with the setting it is carved from the heap, where it
# is reused by the next batch. Prints whether the setting took effect and whether the block lies
# inside the [heap] mapping (its growth alone can fall short of 30 MiB by the free room at the top).
PROBE = """
import torch
from lbdt_cli.utils.memory import keep_freed_memory

def heap_range():
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                a, b = line.split()[0].split("-")
                return int(a, 16), int(b, 16)
    return 0, 0

print(keep_freed_memory(), keep_freed_memory())  # idempotent
block = torch.empty(30 * 2**18).fill_(1.0)
lo, hi = heap_range()
print(lo <= block.data_ptr() and block.data_ptr() + 30 * 2**20 <= hi)
"""


def probe(default_malloc: bool) -> tuple[list[str], str]:
    env = {**os.environ, "LBDT_DEFAULT_MALLOC": "1" if default_malloc else "0"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    *applied, in_heap = out.stdout.split()
    return applied, in_heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc allocator setting")
def test_big_feature_maps_come_from_the_heap():
    applied, in_heap = probe(default_malloc=False)
    assert applied == ["True", "True"]
    assert in_heap == "True"  # served from the heap, so freeing it keeps it for the next batch
    not_applied, in_heap_default = probe(default_malloc=True)
    assert not_applied == ["False", "False"]
    assert in_heap_default == "False"  # glibc's default: a separate mapping, unmapped on free
