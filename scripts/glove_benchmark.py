"""The GloVe first run on a generated file of the real size and format, next to the plain
line-by-line parser (the tool's first one) measured on a slice of the same file in the same run.

    python scripts/glove_benchmark.py --dir /tmp/glove_gen            # 2,196,017 words, ~5.6 GB
    python scripts/glove_benchmark.py --dir /tmp/glove_gen --words 200000 --slice-mb 64

The file imitates glove.840B.300d.txt: one word and 300 numbers per line written like the
release's ("%.5g": -0.082752, 0.0067192, 2.4e-05), some words with spaces, some non-ASCII, a few
repeated (the last row wins). Each measurement runs in its own process (after `import torch`, as
the CLI has it), which reports its wall time, CPU time and peak RSS. The new parser's rows are
checked against the plain parser's on the slice and on the file's last lines. The generated file
and the cache are deleted at the end unless --keep (the file takes ~5.6 GB of disk, the cache 2.6 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_WORDS, REAL_BYTES = 2_196_017, 5_646_236_541  # glove.840B.300d.txt

_CHILD_PRELUDE = """
import json, resource, sys, time
t0 = time.perf_counter()
import torch  # the CLI has torch loaded when it parses, so its memory counts here too
"""
_CHILD_REPORT = """
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_rss_mb": ru.ru_maxrss / 1024, **extra}))
"""


def generate(path: Path, words: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pool = []  # distinct vector texts; rows reuse them (parsing cost does not depend on the values)
    for _ in range(4096):
        v = rng.normal(0.0, 0.4, 300)
        v[rng.random(300) < 0.01] *= 1e-4  # some tiny values, written with an exponent
        pool.append((" " + " ".join("%.5g" % x for x in v) + "\n").encode())
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    specials = ["café", "naïve", "東京", "Straße", "ö", "😀", "\u00a0nbsp"]
    pick = rng.integers(0, len(pool), words)
    lengths = rng.integers(1, 9, words)
    with open(path, "wb", buffering=64 << 20) as fh:
        for i in range(words):
            w = letters[rng.integers(0, 26, lengths[i])].tobytes().decode() + format(i, "x")
            if i % 997 == 5:
                w = f"{specials[i % len(specials)]}{i}"
            if i % 4999 == 7:  # words with spaces, like 840B's ". . ." and "at name@domain.com"
                w = ". . ." if i % 2 else f"at name{i}@domain.com"
            if i % 100_003 == 11 and i > 11:  # a repeat of an earlier word: the last row wins
                w = "w-dup"
            if i == 11:
                w = "w-dup"
            fh.write(w.encode() + pool[pick[i]])


def child(code: str, env: dict | None = None) -> dict:
    full = _CHILD_PRELUDE + code + _CHILD_REPORT
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", **(env or {})}
    out = subprocess.run([sys.executable, "-c", full], env=env, stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="scratch folder (outside the repository)")
    ap.add_argument("--words", type=int, default=REAL_WORDS)
    ap.add_argument("--slice-mb", type=int, default=256, help="size of the slice the plain parser reads")
    ap.add_argument("--keep", action="store_true", help="keep the generated file and the cache")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    src, cache = args.dir / "glove.gen.300d.txt", args.dir / "cache"
    slice_file = args.dir / "slice.txt"
    try:
        if not src.is_file():
            t = time.perf_counter()
            generate(src, args.words)
            print(f"generated {src}: {args.words:,} words, {src.stat().st_size / 1e9:.2f} GB "
                  f"({time.perf_counter() - t:.0f} s; the real file: {REAL_WORDS:,} words, {REAL_BYTES / 1e9:.2f} GB)")
        size = src.stat().st_size
        with open(src, "rb") as fh:
            head = fh.read(args.slice_mb << 20)
        slice_file.write_bytes(head[: head.rfind(b"\n") + 1])
        shutil.rmtree(cache, ignore_errors=True)
        os.sync()
        load0 = os.getloadavg()[0]

        old = child(f"""
from reference_glove import reference_parse
t = time.perf_counter()
words, vectors = reference_parse({str(slice_file)!r})
parse_s = time.perf_counter() - t
import numpy as np
np.save({str(args.dir / 'slice_vectors.npy')!r}, vectors)
open({str(args.dir / 'slice_words.json')!r}, 'w').write(json.dumps(words))
extra = {{"parse_s": parse_s, "rows": len(words)}}
""")
        new = child(f"""
from rich.console import Console
from lbdt_cli.commands._glove import prepare_glove
import os
os.environ["LBDT_CACHE"] = {str(cache)!r}
t = time.perf_counter()
prepare_glove({str(src)!r}, True, Console(stderr=True))
extra = {{"parse_s": time.perf_counter() - t}}
""")
        cached = child(f"""
import os
os.environ["LBDT_CACHE"] = {str(cache)!r}
from lbdt_cli.glove import GloveVectors
t = time.perf_counter()
g = GloveVectors.from_file({str(src)!r})
v = g.lookup("the man in a brown shirt is jumping over café . . . w-dup".split(" "))
extra = {{"open_s": time.perf_counter() - t, "rows": len(g)}}
""")
        # correctness: the slice's rows, the last lines, and the repeated word
        sys.path[:0] = [str(REPO), str(REPO / "tests")]
        from reference_glove import reference_parse

        from lbdt_cli.glove import GloveVectors

        os.environ["LBDT_CACHE"] = str(cache)
        g = GloveVectors.from_file(src)
        ref_words = json.loads((args.dir / "slice_words.json").read_text())
        ref_vectors = np.load(args.dir / "slice_vectors.npy")
        n = len(ref_words)
        same_head = np.array_equal(np.asarray(g.vectors[:n]), ref_vectors) and all(
            g.word(i) == w for i, w in enumerate(ref_words))
        with open(src, "rb") as fh:
            fh.seek(max(0, size - (8 << 20)))
            tail = fh.read()
        tail_file = args.dir / "tail.txt"
        tail_file.write_bytes(tail[tail.find(b"\n") + 1 :])
        tw, tv = reference_parse(tail_file)
        same_tail = np.array_equal(np.asarray(g.vectors[len(g) - len(tw) :]), tv) and all(
            g.word(len(g) - len(tw) + i) == w for i, w in enumerate(tw))
        dup_ok = g.index("w-dup") == max(range(11, args.words, 100_003))
        rows_ok = len(g) == args.words

        slice_bytes = slice_file.stat().st_size
        old_rate = slice_bytes / old["parse_s"]
        print(f"\nGloVe first run, generated file {size / 1e9:.2f} GB, {args.words:,} words (same run, same machine; "
              f"load average before {load0:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
        print(f"  plain line-by-line parser, first {slice_bytes / 1e6:.0f} MB: {old_rate / 1e6:6.1f} MB/s "
              f"-> whole file ~{size / old_rate:.0f} s; peak RSS {old['peak_rss_mb']:.0f} MB at "
              f"{old['rows']:,} rows (and growing with every row)")
        print(f"  new parser, whole file:                {size / new['parse_s'] / 1e6:6.1f} MB/s "
              f"-> {new['parse_s']:.1f} s parsing, {new['wall_s']:.1f} s process wall (import torch included), "
              f"CPU {new['cpu_s']:.1f} s; peak RSS {new['peak_rss_mb']:.0f} MB")
        chunks = json.loads((g.folder / "meta.json").read_text())["chunks"]
        print(f"    chunks: {chunks['total']}, with left-out rows put back {chunks['with_rows_put_back']}, "
              f"line by line {chunks['line_by_line']}; CPU time / {os.cpu_count()} cores = "
              f"{new['cpu_s'] / os.cpu_count():.1f} s")
        print(f"  speed-up {old['parse_s'] / slice_bytes * size / new['parse_s']:.1f}x; cached open + 12 lookups: "
              f"{cached['open_s'] * 1e3:.0f} ms ({cached['rows']:,} rows), peak RSS {cached['peak_rss_mb']:.0f} MB")
        print(f"  checks: rows {'ok' if rows_ok else 'WRONG'}, first {n:,} rows equal the plain parser's: "
              f"{same_head}, last {len(tw):,} rows equal: {same_tail}, repeated word -> last row: {dup_ok}")
        if not (rows_ok and same_head and same_tail and dup_ok):
            sys.exit(1)
    finally:
        if not args.keep:
            for p in (src, slice_file, args.dir / "tail.txt", args.dir / "slice_vectors.npy",
                      args.dir / "slice_words.json"):
                p.unlink(missing_ok=True)
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
