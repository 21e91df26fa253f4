import os

# Tests run on 2 shared cores; more threads only add contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")
