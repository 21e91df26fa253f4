"""GloVe parsing and cache: the streaming parser against a plain line-by-line reading, the cache's
checks (a partial or corrupt cache is rebuilt), and the first run's progress bar in the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import lbdt_cli.glove as glove
from lbdt_cli.errors import InputError
from lbdt_cli.glove import GloveVectors, cache_path, is_valid_cache
from reference_glove import ShortLine, reference_parse

DIM = 300


def _vec(rng) -> bytes:
    v = rng.normal(0, 0.4, DIM)
    v[::37] *= 1e-4  # some written with an exponent
    return " ".join("%.5g" % x for x in v).encode()


def _odd_file(path, rng, n=240) -> None:
    """Ordinary lines with every unusual kind of line mixed in, across many chunks."""
    lines = []
    for i in range(n):
        word = f"w{i}".encode()
        if i % 17 == 3:
            word = (". . ." if i % 2 else f"at name{i}@domain.com").encode()  # words with spaces
        elif i % 13 == 5:
            word = f"café東京{i}".encode()
        elif i % 29 == 7:
            word = b"dup"  # repeated: the last row wins
        elif i % 31 == 9:
            word = "\u00a0nbsp".encode()  # a non-breaking space is part of the word
        lines.append(word + b" " + _vec(rng))
    lines.insert(0, b"%d %d" % (n, DIM))  # a header line
    lines[50] = b"bad\xff\xfeword " + _vec(rng)  # not UTF-8: skipped
    lines[51] = b"bad\xff word with spaces " + _vec(rng)  # not UTF-8, with spaces: skipped
    lines[60] = b"nonumber " + b" ".join([b"0.5"] * (DIM - 1) + [b"abc"])  # a number that does not parse
    lines[70] = b""  # an empty line
    lines[80] = b"trailing " + _vec(rng) + b" "  # a trailing space
    lines[90] = b" " + _vec(rng)  # an empty word
    lines[100] = b"  "
    path.write_bytes(b"\n".join(lines) + b"\n")


def _assert_same_as_reference(g: GloveVectors, path) -> None:
    words, vectors = reference_parse(path)
    assert len(g) == len(words) > 0
    assert [g.word(i) for i in range(len(g))] == words
    assert np.array_equal(np.asarray(g.vectors), vectors)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of ~8 lines, so lines straddle chunks and every chunk holds something unusual."""
    monkeypatch.setattr(glove, "CHUNK_BYTES", 20_000)


def test_parser_equals_a_plain_reading(tmp_path, small_chunks):
    src = tmp_path / "odd.txt"
    _odd_file(src, np.random.default_rng(0))
    g = GloveVectors.from_file(src, cache_dir=tmp_path / "cache")
    _assert_same_as_reference(g, src)
    chunks = json.loads((g.folder / "meta.json").read_text())["chunks"]
    assert chunks["with_rows_put_back"] > 5 and 0 < chunks["line_by_line"] < 4  # both roads taken
    assert g.skipped_lines == 3  # two non-UTF-8 words, one number that does not parse
    # lookups: words with spaces and non-ASCII, the empty word, a repeated word's last row
    words, vectors = reference_parse(src)
    for w in (". . .", "café東京5", "\u00a0nbsp", "w1"):
        assert np.array_equal(g.lookup([w])[0], vectors[len(words) - 1 - words[::-1].index(w)])
    last_dup = max(i for i, w in enumerate(words) if w == "dup")
    assert g.index("dup") == last_dup and words.count("dup") > 2
    assert g.index("nope") is None and "nope" not in g and "w1" in g
    assert not g.lookup(["", "nope"]).any()


def test_one_big_chunk_and_crlf(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "odd.txt"
    _odd_file(src, rng)
    _assert_same_as_reference(GloveVectors.from_file(src, cache_dir=tmp_path / "c1"), src)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(src.read_bytes().replace(b"\n", b"\r\n"))
    _assert_same_as_reference(GloveVectors.from_file(crlf, cache_dir=tmp_path / "c2"), crlf)


def test_last_line_without_newline(tmp_path, small_chunks):
    rng = np.random.default_rng(2)
    full = b"\n".join(b"w%d " % i + _vec(rng) for i in range(30))
    complete = tmp_path / "complete.txt"  # no newline at the end, last line whole: kept
    complete.write_bytes(full)
    g = GloveVectors.from_file(complete, cache_dir=tmp_path / "c")
    _assert_same_as_reference(g, complete)
    assert len(g) == 30 and not g.truncated_last_line
    cut = tmp_path / "cut.txt"  # a cut-off download: the partial last line is dropped
    cut.write_bytes(full[: full.rfind(b"\n") + 200])
    g = GloveVectors.from_file(cut, cache_dir=tmp_path / "c")
    _assert_same_as_reference(g, cut)
    assert len(g) == 29 and g.truncated_last_line


def test_short_line_inside_the_file_is_an_error(tmp_path, small_chunks):
    rng = np.random.default_rng(3)
    lines = [b"w%d " % i + _vec(rng) for i in range(40)]
    lines[33] = b"short 0.1 0.2 0.3"
    src = tmp_path / "short.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ShortLine, match="34"):
        reference_parse(src)
    with pytest.raises(InputError, match="line 34: expected a word and 300 numbers"):
        GloveVectors.from_file(src, cache_dir=tmp_path / "c")
    assert not [p for p in (tmp_path / "c").iterdir() if not p.name.endswith(".lock")]  # nothing half-written


def test_cached_run_maps_and_a_bad_cache_is_rebuilt(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    src = tmp_path / "g.txt"
    src.write_bytes(b"".join(b"w%d " % i + _vec(rng) + b"\n" for i in range(50)))
    cache = tmp_path / "cache"
    seen = []
    g = GloveVectors.from_file(src, cache_dir=cache, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (src.stat().st_size, src.stat().st_size)
    folder = cache_path(src, cache)
    assert is_valid_cache(folder, src) and isinstance(g.vectors, np.memmap)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "offsets.npy", "order.npy", "vectors.npy",
                                                        "words.bin"]
    expected = np.load(folder / "vectors.npy")  # an ordinary .npy
    assert expected.shape == (50, DIM) and np.array_equal(np.asarray(g.vectors), expected)

    builds = []
    real_build = glove.build_cache
    monkeypatch.setattr(glove, "build_cache", lambda *a, **k: (builds.append(1), real_build(*a, **k)))
    again = GloveVectors.from_file(src, cache_dir=cache)  # cached: no parse
    assert not builds and np.array_equal(np.asarray(again.vectors), expected)

    def damage(how):
        if how == "truncated vectors":
            with open(folder / "vectors.npy", "r+b") as fh:
                fh.truncate(fh.seek(0, 2) - 4)
        elif how == "changed vectors":
            with open(folder / "vectors.npy", "r+b") as fh:
                fh.seek(-8, 2)
                fh.write(b"\x01\x02\x03\x04\x05\x06\x07\x08")
        elif how == "changed words":
            data = bytearray((folder / "words.bin").read_bytes())
            data[3] ^= 0x20
            (folder / "words.bin").write_bytes(bytes(data))
        elif how == "no meta":
            (folder / "meta.json").unlink()
        elif how == "garbage meta":
            (folder / "meta.json").write_text("{not json")
        elif how == "missing order":
            (folder / "order.npy").unlink()

    for how in ("truncated vectors", "changed vectors", "changed words", "no meta", "garbage meta", "missing order"):
        damage(how)
        assert not is_valid_cache(folder, src), how
        builds.clear()
        g2 = GloveVectors.from_file(src, cache_dir=cache)
        assert builds == [1], how
        assert is_valid_cache(folder, src) and np.array_equal(np.asarray(g2.vectors), expected), how
        assert g2.index("w7") == 7
    # a build killed half-way leaves a temporary folder tagged with its dead owner: the next build
    # in this folder removes it
    from lbdt_cli.utils import atomic

    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = folder.with_name(f".{folder.name}.tmp-{atomic.owner_tag(dead)}abcd")
    stale.mkdir()
    monkeypatch.setattr(atomic, "_swept", set())
    (folder / "meta.json").unlink()
    GloveVectors.from_file(src, cache_dir=cache)
    assert not stale.exists()


def test_unwritable_cache_still_works(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "g.txt"
    src.write_bytes(b"".join(b"w%d " % i + _vec(rng) + b"\n" for i in range(5)))
    blocked = tmp_path / "afile"
    blocked.write_text("")  # the cache folder would have to be inside a file
    g = GloveVectors.from_file(src, cache_dir=blocked / "cache")
    assert len(g) == 5 and g.index("w3") == 3 and g.lookup(["w4"]).any()


def _glove_checkpoint(tmp_path):
    from lbdt_cli.model import build_model, save_checkpoint

    path = tmp_path / "tiny_glove.pt"
    save_checkpoint(path, build_model("tiny", word_embedding="glove", vocabulary=None))
    return path


def test_cli_first_run_progress_and_quiet_json(tmp_path, run_cli, monkeypatch, one_torch_thread):
    monkeypatch.setenv("LBDT_CACHE", str(tmp_path / "lbdt_cache"))
    rng = np.random.default_rng(6)
    src = tmp_path / "glove.small.300d.txt"
    src.write_bytes(b"".join(w + b" " + _vec(rng) + b"\n" for w in (b"a", b"the", b"circle", b"red")))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{i:05d}.png")
    ckpt = _glove_checkpoint(tmp_path)
    folder = cache_path(src, tmp_path / "lbdt_cache" / "glove")

    r = run_cli("segment", frames, "the red circle", "--checkpoint", ckpt, "--glove", src, "-o", tmp_path / "o1",
                "--format", "h5", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["videos"][0]["frames"] == 3  # stdout is the JSON document alone
    assert "GloVe" not in r.stderr and is_valid_cache(folder, src)

    os.utime(src, ns=(1, 1))  # a changed file: a new first run
    folder = cache_path(src, tmp_path / "lbdt_cache" / "glove")
    r = run_cli("segment", frames, "the red circle", "--checkpoint", ckpt, "--glove", src, "-o", tmp_path / "o2",
                "--format", "h5", "--quiet")
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "o2" / "frames") and "GloVe" not in r.stderr
    assert is_valid_cache(folder, src)

    os.utime(src, ns=(2, 2))
    r = run_cli("segment", frames, "the red circle", "--checkpoint", ckpt, "--glove", src, "-o", tmp_path / "o3",
                "--format", "h5")
    assert r.code == 0, r.stderr
    assert "GloVe first run" in r.stderr and "GloVe vectors cached in" in r.stderr
    r = run_cli("segment", frames, "the red circle", "--checkpoint", ckpt, "--glove", src, "-o", tmp_path / "o4",
                "--format", "h5")
    assert r.code == 0 and "GloVe first run" not in r.stderr  # cached
    # --benchmark with a GloVe model: its naive loop and the fresh-process run get the vectors too
    r = run_cli("segment", frames, "the red circle", "--checkpoint", ckpt, "--glove", src, "-o", tmp_path / "o5",
                "--benchmark", "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["frames"] == 3 and doc["whole_command_s"] > 0 and doc["time_to_first_mask_s"] > 0
