"""CPU and wall time from this process's start to the first mask, in three steps, for whichever
lbdt_cli is first on the import path (run it against two checkouts to compare them; CPU time
moves much less than wall time on a shared machine).

    PYTHONPATH=. python scripts/startup_profile.py LBDT_1.pth glove_small.txt clip24.mp4 --label after
"""

import argparse
import os
import resource
import sys
import time

t0 = time.perf_counter()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("glove")
    ap.add_argument("clip")
    ap.add_argument("--label", default="this checkout")
    args = ap.parse_args()
    from lbdt_cli.utils.memory import keep_freed_memory

    keep_freed_memory()
    import torch  # noqa: F401

    from lbdt_cli.engine import Predictor
    from lbdt_cli.video.reader import iter_frames

    c_imp, w_imp = cpu(), time.perf_counter() - t0
    p = Predictor.from_checkpoint(args.checkpoint, glove=args.glove, device="cpu")
    vectors, mask, _ = p.embedder.embed(["the man on the left"])
    text = p.encode_text(vectors, mask)
    c_ready, w_ready = cpu(), time.perf_counter() - t0
    next(iter(p.predict_stream(iter_frames(args.clip), text)))
    c_first, w_first = cpu(), time.perf_counter() - t0
    print(f"{args.label}: CPU s: imports {c_imp:.2f} + checkpoint/model/text {c_ready - c_imp:.2f} + first mask "
          f"{c_first - c_ready:.2f} = {c_first:.2f}; wall s at those points {w_imp:.1f} / {w_ready:.1f} / {w_first:.1f}; "
          f"torchvision imported: {'torchvision' in sys.modules}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
