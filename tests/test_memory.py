import os
import subprocess
import sys

import pytest

# Where a 30 MiB block (the size of a batch-4 stage-2 feature map) comes from: glibc's defaults
# map it separately and unmap it on free; with the setting it is carved from the heap, where it
# is reused by the next batch. Prints whether the setting took effect and how much the heap grew.
PROBE = """
import torch
from lbdt_cli.utils.memory import keep_freed_memory

def heap_bytes():
    with open("/proc/self/maps") as f:
        return sum(int(b, 16) - int(a, 16) for a, b in
                   (line.split()[0].split("-") for line in f if line.rstrip().endswith("[heap]")))

print(keep_freed_memory(), keep_freed_memory())  # idempotent
before = heap_bytes()
block = torch.empty(30 * 2**18).fill_(1.0)
print(heap_bytes() - before)
"""


def probe(default_malloc: bool) -> tuple[list[str], int]:
    env = {**os.environ, "LBDT_DEFAULT_MALLOC": "1" if default_malloc else "0"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    *applied, grown = out.stdout.split()
    return applied, int(grown)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc allocator setting")
def test_big_feature_maps_come_from_the_heap():
    applied, grown = probe(default_malloc=False)
    assert applied == ["True", "True"]
    assert grown >= 30 * 2**20  # served from the heap, so freeing it keeps it for the next batch
    not_applied, grown_default = probe(default_malloc=True)
    assert not_applied == ["False", "False"]
    assert grown_default < 30 * 2**20  # glibc's default: a separate mapping, unmapped on free
