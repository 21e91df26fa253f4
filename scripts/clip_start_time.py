"""Start-up time of `lbdt segment` against the number of clips: seconds from launch until the
first clip's output folder is in place, for N clips (symbolic links to one tiny clip), for this
checkout and, side by side, for a baseline checkout given with --baseline (e.g. an older commit
unpacked with `git archive`). The run is stopped with SIGTERM once the first folder appears (which
also checks that the stop leaves no temporary folder behind).

    python scripts/clip_start_time.py --counts 10,10000 --baseline /tmp/base --baseline-counts 10,1000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_output_s(repo: Path, clips: Path, ckpt: Path, out: Path, timeout: float) -> float:
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "lbdt_cli", "segment", str(clips), "-e", "a circle", "-c", str(ckpt),
           "-o", str(out), "--end", "2", "-q", "-f", "h5"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - t0 < timeout:
            if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
                return time.perf_counter() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"{repo}: exited {proc.returncode}: {proc.stderr.read()[-500:]}")
            time.sleep(0.02)
        return float("nan")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="10,10000")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time side by side")
    ap.add_argument("--baseline-counts", default=None, help="clip counts for the baseline (default: --counts)")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from lbdt_cli.model import build_model, save_checkpoint

    with tempfile.TemporaryDirectory(prefix="lbdt-start-") as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip.mkv"
        import imageio_ffmpeg

        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                        "testsrc=size=64x48:rate=10", "-frames:v", "4", "-c:v", "ffv1", str(clip)], check=True)  # fmt: skip
        ckpt = tmp / "tiny.pt"
        save_checkpoint(ckpt, build_model("tiny"))
        runs = [("this checkout", REPO, [int(c) for c in args.counts.split(",")])]
        if args.baseline:
            runs.append(("baseline", args.baseline, [int(c) for c in (args.baseline_counts or args.counts).split(",")]))
        for label, repo, counts in runs:
            for n in counts:
                folder = tmp / f"clips{n}"
                if not folder.exists():
                    folder.mkdir()
                    for i in range(n):
                        os.symlink(clip, folder / f"c{i:05d}.mkv")
                out = tmp / f"out-{label.replace(' ', '_')}-{n}"
                s = first_output_s(Path(repo), folder, ckpt, out, args.timeout)
                left = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else []
                print(f"{label:14s} {n:6d} clips: first clip written after {s:7.2f} s"
                      f"{'  (temporaries left: ' + str(left) + ')' if left else ''}", flush=True)


if __name__ == "__main__":
    main()
