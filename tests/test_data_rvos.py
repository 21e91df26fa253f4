"""Dataset readers on tiny datasets written in each original release layout."""

import json

import numpy as np
import pytest

from lbdt_cli.data import open_dataset
from lbdt_cli.data.common import previous_frame, previous_frames
from lbdt_cli.errors import InputError, LbdtError
from rvos_layouts import A2D_MASKS, H, W, davis_labels, frame_rgb, make_a2d, make_davis, make_jhmdb, make_ytvos, ytvos_labels


@pytest.fixture(scope="module")
def a2d_root(tmp_path_factory):
    return make_a2d(tmp_path_factory.mktemp("a2d"))


def test_previous_frame_rules():
    assert previous_frame("00010", 6) == "00004"
    assert previous_frame("00003", 6) == "00001"  # clamp to frame 1
    assert previous_frame("00003", 6, first=0) == "00000"
    frames = ["00000", "00005", "00010"]
    assert previous_frame("00010", 5, frames) == "00005"
    assert previous_frame("00005", 5, frames) == "00000"
    assert previous_frame("00007", 5, ["00000", "00007"]) == "00000"  # 00002 not listed -> first
    assert previous_frame("00010", 5, frames, members=frozenset(frames)) == "00005"
    assert previous_frames(frames, 5, frames) == {"00000": "00000", "00005": "00000", "00010": "00005"}


def _count_calls(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_each_annotation_file_is_read_once_for_all_expressions_on_it(a2d_root, tmp_path, monkeypatch):
    from lbdt_cli.data import a2d, davis, shapes_reader, ytvos

    def gts(ds):
        return [s.load_gt()[0].sum() for s in ds.samples]

    cases = [(a2d, "read_instance_masks", open_dataset("a2d", a2d_root, "test")),
             (ytvos, "read_index_png", open_dataset("ytvos", make_ytvos(tmp_path / "y"), "train")),
             (davis, "read_index_png", open_dataset("davis", make_davis(tmp_path / "d"), "val"))]
    from lbdt_cli.data.shapes_generator import write_shapes

    write_shapes(tmp_path / "s", 1, seed=5, size=32, frames=3)
    cases.append((shapes_reader, "read_index_png", open_dataset("shapes", tmp_path / "s")))
    for module, name, ds in cases:
        calls = _count_calls(monkeypatch, module, name)
        first = gts(ds)
        frames = {(s.video_id, s.frame) for s in ds.samples}
        assert len(ds) > len(frames) or module is davis  # several expressions share a frame
        assert len(calls) == len(frames), (module.__name__, len(calls), len(frames))
        assert gts(ds) == first and len(calls) == len(frames)  # second pass: all from the cache
        monkeypatch.undo()
    ds = open_dataset("ytvos", tmp_path / "y", "train")
    ds.gt_cache_size = 1  # the cache stays bounded
    gts(ds)
    assert len(ds._gt_cache) == 1


def test_a2d_samples_follow_mttr_construction(a2d_root):
    ds = open_dataset("a2d", a2d_root, "test")
    got = [(s.video_id, s.frame, s.object_id, s.expression, s.prev_frame) for s in ds.samples]
    assert got == [
        ("vidA", "00003", "0", "the man, jumping", "00001"),  # quoted comma kept, lower-cased
        ("vidA", "00003", "1", "the dog", "00001"),
        ("vidA", "00008", "1", "the dog", "00002"),  # instance 0 absent at 00008: not evaluated
        ("vidB", "00005", "0", "ball rolling", "00001"),
    ]  # '1 (copy)' row dropped, vidC is train, vidM is in the missed list
    assert len({s.sample_id for s in ds.samples}) == 4
    rep = ds.check()
    assert (rep.videos, rep.expressions, rep.annotated_frames, rep.samples) == (2, 3, 3, 4)
    train = open_dataset("a2d", a2d_root, "train")
    assert [(s.video_id, s.frame) for s in train.samples] == [("vidC", "00002")]


def test_a2d_gt_transpose_single_instance_and_first_match(a2d_root):
    ds = open_dataset("a2d", a2d_root, "test")
    for s in ds.samples:
        gt, void = s.load_gt()
        assert void is None and gt.shape == (H, W)
        assert (gt == A2D_MASKS[s.video_id, s.frame, int(s.object_id)].astype(bool)).all()


def test_a2d_frames_decoded_from_mp4_are_fid_minus_one(a2d_root):
    ds = open_dataset("a2d", a2d_root, "test")
    frames = ds.load_frames("vidA", ["00001", "00008"])
    assert abs(int(frames["00001"][0, 0, 0]) - frame_rgb(0)[0, 0, 0]) <= 2
    assert abs(int(frames["00008"][0, 0, 0]) - frame_rgb(7)[0, 0, 0]) <= 2
    with pytest.raises(InputError, match=r"vidA.mp4 (has no frame 00020|has zero frames)"):
        ds.load_frames("vidA", ["00020"])


def test_a2d_bad_inputs(tmp_path):
    root = make_a2d(tmp_path / "r", with_clips=False)
    with pytest.raises(InputError, match="clips320H"):
        open_dataset("a2d", root, "test")
    (root / "Release" / "pngs320H" / "vidA").mkdir(parents=True)
    ds = open_dataset("a2d", root, "test")  # pre-extracted frame folders are accepted
    with pytest.raises(InputError, match="00003.png"):
        ds.load_frames("vidA", ["00003"])
    (root / "a2d_annotation.txt").write_text("video,query\nvidA,x\n")
    with pytest.raises(InputError, match="expected header 'video_id,instance_id,query'"):
        open_dataset("a2d", root, "test")
    (root / "a2d_annotation.txt").write_text("video_id,instance_id,query\nvidA,zero,x\n")
    with pytest.raises(InputError, match="not an integer"):
        open_dataset("a2d", root, "test")
    (root / "Release" / "videoset.csv").write_text("vidA,11,0\n")
    with pytest.raises(InputError, match="videoset.csv line 1"):
        open_dataset("a2d", root, "test")
    (root / "Release" / "videoset.csv").unlink()
    with pytest.raises(InputError, match=r"missing .*videoset.csv"):
        open_dataset("a2d", root, "test")


def test_a2d_malformed_h5(tmp_path):
    root = make_a2d(tmp_path / "r", with_clips=False)
    (root / "Release" / "pngs320H").mkdir()
    (root / "a2d_annotation_with_instances" / "vidB" / "00005.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"00005.h5: not a readable HDF5 file"):
        open_dataset("a2d", root, "test")


def test_jhmdb_frames_masks_and_mttr_override(tmp_path):
    root = make_jhmdb(tmp_path)
    ds = open_dataset("jhmdb", root)
    got = [(s.video_id, s.frame, s.prev_frame) for s in ds.samples]
    # vid1: T = 8 < 10 pngs -> quarter points 3, 5, 7; vid2: T = 3 -> all frames
    assert got == [("vid1", "00003", "00001"), ("vid1", "00005", "00001"), ("vid1", "00007", "00002"),
                   ("vid2", "00001", "00001"), ("vid2", "00002", "00001"), ("vid2", "00003", "00001")]
    s = ds.samples[2]
    gt, _ = s.load_gt()
    f = 6  # frame 7 -> part_mask[:, :, 6]
    expect = np.zeros((H, W), bool)
    expect[f : f + 5, 2 * f : 2 * f + 6] = True
    assert (gt == expect).all()
    assert abs(int(s.load_frame()[0, 0, 0]) - 70) <= 0
    assert ds.mask_relpath(s) == "vid1/00007.png"
    assert ds.check().samples == 6
    (root / "jhmdb_sentences_samples_metadata.json").write_text(json.dumps(
        [["vid1", "/x/Rename_Images/brush_hair/vid1/00002.png", "m", 8, "q"],
         ["vid2", "/x/Rename_Images/wave/vid2/00003.png", "m", 3, "q"]]))
    ds = open_dataset("jhmdb", root)
    assert [(s.video_id, s.frame) for s in ds.samples] == [("vid1", "00002"), ("vid2", "00003")]


def test_jhmdb_bad_mat(tmp_path):
    root = make_jhmdb(tmp_path)
    (root / "puppet_mask" / "wave" / "vid2" / "puppet_mask.mat").write_bytes(b"garbage")
    with pytest.raises(InputError, match="puppet_mask.mat: not a MATLAB v5 file"):
        open_dataset("jhmdb", root)


def test_ytvos_samples_gt_and_prev(tmp_path):
    root = make_ytvos(tmp_path)
    ds = open_dataset("ytvos", root, "train")
    assert len(ds) == 6
    s = [x for x in ds.samples if x.expression_id == "1" and x.frame == "00010"][0]
    assert s.prev_frame == "00005" and s.object_id == "2" and s.expression == "the green box"
    gt, _ = s.load_gt()
    assert (gt == (ytvos_labels(2) == 2)).all()
    assert ds.mask_relpath(s) == "v1/1/00010.png"
    (root / "valid" / "JPEGImages").mkdir(parents=True)
    (root / "meta_expressions" / "valid").mkdir(parents=True)
    (root / "meta_expressions" / "valid" / "meta_expressions.json").write_text(
        (root / "meta_expressions" / "train" / "meta_expressions.json").read_text())
    valid = open_dataset("ytvos", root, "valid")  # opens for --submission; nothing to score against
    assert not valid.has_masks and len(valid) == 6
    with pytest.raises(InputError, match="CodaLab"):
        valid.samples[0].load_gt()


def test_davis_encodings_typos_and_void(tmp_path):
    root = make_davis(tmp_path)
    ds = open_dataset("davis", root, "val")
    assert sorted({(s.video_id, s.expression) for s in ds.samples}) == [
        ("bear", "a brown bear walking"), ("dogs-scale", "the dog near the café")]
    assert len(ds) == 6
    s = ds.samples[1]
    gt, void = s.load_gt()
    lab = davis_labels(1)
    assert (gt == (lab == 1)).all() and (void == (lab == 255)).all()
    assert s.prev_frame == "00000"
    rep = ds.check()
    assert (rep.videos, rep.expressions, rep.samples) == (2, 2, 6)
    (root / "davis_text_annotations" / "Davis17_annot1.txt").write_text("bear one\n")
    with pytest.raises(InputError, match="Davis17_annot1.txt line 1"):
        open_dataset("davis", root, "val")


def test_shapes_folder_matches_generator(tmp_path):
    from lbdt_cli.data.shapes_generator import generate_clip, write_shapes

    write_shapes(tmp_path / "s", 1, seed=5, size=32, frames=3)
    ds = open_dataset("shapes", tmp_path / "s", interval=2)
    clip = generate_clip(5, size=32, num_frames=3)
    assert len(ds) == 3 * len(clip.expressions)
    s = [x for x in ds.samples if x.frame == "00002"][0]
    assert s.prev_frame == "00000" and s.expression == clip.expressions[0].text
    gt, _ = s.load_gt()
    assert (gt == clip.objects[clip.expressions[0].object].masks[2]).all()
    assert (s.load_frame() == clip.frames[2]).all()  # lossless mp4
    gen = open_dataset("shapes", None, "test", num_clips=1, size=32, num_frames=3, seed=5)
    assert [x.sample_id for x in gen.samples] == [x.sample_id for x in ds.samples]


def test_unknown_dataset_and_missing_root():
    with pytest.raises(LbdtError, match="unknown dataset") as info:
        open_dataset("coco", "/tmp")
    assert info.value.exit_code == 2  # a bad name, not a bad file
    with pytest.raises(LbdtError, match="--root is required") as info:
        open_dataset("ytvos", None)
    assert info.value.exit_code == 2
    with pytest.raises(InputError, match="does not exist"):
        open_dataset("ytvos", "/nonexistent/path")
