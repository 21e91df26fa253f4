"""Metrics: hand-computed cases for the IoU family, P@K ties, boundary F, and pycocotools agreement."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lbdt_cli import metrics as M


def _mask(h, w, box):
    m = np.zeros((h, w), bool)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_intersection_union_and_iou_edge_cases():
    gt = _mask(4, 4, (0, 2, 0, 2))  # 4 px
    pred = _mask(4, 4, (0, 2, 1, 3))  # 4 px, overlap 2
    assert M.intersection_union(pred, gt) == (2, 6)
    assert M.sample_iou(2, 6) == pytest.approx(1 / 3, abs=1e-6)
    empty = np.zeros((4, 4), bool)
    assert M.sample_iou(*M.intersection_union(empty, empty)) == 1.0  # LBDT/MTTR convention
    assert M.sample_iou(*M.intersection_union(pred, empty)) < 1e-6
    with pytest.raises(ValueError):
        M.intersection_union(np.zeros((2, 2)), np.zeros((3, 3)))


def test_precision_ties_at_exactly_k():
    ious = [0.5, 0.6, 0.7, 0.8, 0.9, 0.2]
    inclusive = M.precision_at(ious)
    strict = M.precision_at(ious, strict=True)
    assert inclusive == {0.5: 5 / 6, 0.6: 4 / 6, 0.7: 3 / 6, 0.8: 2 / 6, 0.9: 1 / 6}
    assert strict == {0.5: 4 / 6, 0.6: 3 / 6, 0.7: 2 / 6, 0.8: 1 / 6, 0.9: 0.0}


def test_strict_precision_counts_exact_ties_as_mttrs_float32_iou():
    """Masks whose I/U is exactly 0.5, 0.6, 0.7, 0.8, 0.9 (I pixels inside a U-pixel union, U = 70)."""
    acc = M.MetricAccumulator(strict=True)
    loose = M.MetricAccumulator()
    for k in (35, 42, 49, 56, 63):  # I = K * 70
        gt = np.zeros((7, 10), bool)
        gt[:, :] = True
        pred = np.zeros((7, 10), bool)
        pred.flat[:k] = True
        acc.add(str(k), pred, gt)
        loose.add(str(k), pred, gt)

    def mttr(i, u):  # MTTR's compute_iou: float tensors, (I + EPS) / (U + EPS), then .item() > K
        return ((torch.tensor([float(i)]) + 1e-6) / (torch.tensor([float(u)]) + 1e-6)).item()

    want = {k: float(np.mean([mttr(i, 70) > k for i in (35, 42, 49, 56, 63)])) for k in (0.5, 0.6, 0.7, 0.8, 0.9)}
    got = acc.summary()
    assert {k: got[f"P@{k:g}"] for k in want} == want
    # the ties at 0.5, 0.7 and 0.9 do not count, those at 0.6 and 0.8 do (float32 rounding of K)
    assert want == {0.5: 4 / 5, 0.6: 4 / 5, 0.7: 2 / 5, 0.8: 2 / 5, 0.9: 0.0}
    # float64 with the epsilon would count every tie; the LBDT rule (>=) does
    assert [loose.summary()[f"P@{k:g}"] for k in (0.5, 0.9)] == [1.0, 1 / 5]


def test_lbdt_ap_is_mean_of_precisions_on_005_grid():
    ious = [0.55, 0.95, 0.1, 0.72]
    # >= thresholds .50 .55 .60 .65 .70 .75 .80 .85 .90 .95 -> counts 3,3,2,2,2,1,1,1,1,1 of 4
    assert M.lbdt_ap(ious) == pytest.approx(17 / 40)
    assert M.lbdt_ap(ious, strict=True) == pytest.approx(15 / 40)  # 0.55 and 0.95 ties drop


def test_accumulator_overall_and_mean():
    acc = M.MetricAccumulator()
    acc.add("a", _mask(4, 4, (0, 2, 1, 3)), _mask(4, 4, (0, 2, 0, 2)))  # I=2 U=6
    acc.add("b", _mask(4, 4, (0, 4, 0, 4)), _mask(4, 4, (0, 4, 0, 4)))  # I=16 U=16
    acc.add("c", np.zeros((4, 4)), np.zeros((4, 4)))  # I=0 U=0 -> 1.0
    s = acc.summary()
    assert s["overall_iou"] == pytest.approx(18 / 22)
    assert s["mean_iou"] == pytest.approx((1 / 3 + 1 + 1) / 3, abs=1e-6)
    assert s["P@0.5"] == pytest.approx(2 / 3)
    assert s["num_samples"] == 3
    assert set(s) >= {"P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP", "overall_iou", "mean_iou"}


def test_disk_matches_skimage_footprint():
    assert M.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert M.disk(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert M.disk(3)[0].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert M.disk(3)[1].tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_seg2bmap_single_pixel_and_edges():
    seg = np.zeros((5, 5), bool)
    seg[2, 2] = True
    b = M.seg2bmap(seg)
    assert sorted(zip(*np.nonzero(b))) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    full = np.ones((3, 3), bool)
    assert not M.seg2bmap(full).any()  # no neighbour differs, edges compare along the edge only
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True
    assert not M.seg2bmap(corner)[2, 2]  # bottom-right pixel is always 0


def test_boundary_f_hand_computed():
    # 8x8: d = ceil(0.008 * sqrt(128)) = 1, disk(1) is a cross.
    gt = np.zeros((8, 8), bool)
    gt[2, 2] = True  # boundary {(1,1),(1,2),(2,1),(2,2)}
    pred = np.zeros((8, 8), bool)
    pred[2, 4] = True  # boundary {(1,3),(1,4),(2,3),(2,4)}: (1,3),(2,3) touch the GT's cross
    assert M.boundary_f(pred, gt) == pytest.approx(0.5)  # P = 2/4, R = 2/4
    far = np.zeros((8, 8), bool)
    far[2, 5] = True
    assert M.boundary_f(far, gt) == 0.0
    assert M.boundary_f(gt, gt) == 1.0
    empty = np.zeros((8, 8), bool)
    assert M.boundary_f(empty, gt) == 0.0  # P=1, R=0
    assert M.boundary_f(gt, empty) == 0.0  # P=0, R=1
    assert M.boundary_f(empty, empty) == 1.0


def test_region_j_with_void():
    gt = _mask(4, 4, (0, 2, 0, 2))
    pred = _mask(4, 4, (0, 2, 0, 4))
    void = _mask(4, 4, (0, 4, 2, 4))  # the extra predicted pixels are void
    assert M.region_j(pred, gt) == pytest.approx(0.5)
    assert M.region_j(pred, gt, void) == 1.0
    assert M.region_j(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_davis_per_object_mean():
    acc = M.MetricAccumulator(davis=True)
    gt = _mask(8, 8, (2, 6, 2, 6))
    acc.add("v/0/0", gt, gt, video_id="v", object_id="0")
    acc.add("v/0/1", np.zeros((8, 8)), gt, video_id="v", object_id="0")  # J=0, F=0
    acc.add("v/1/0", gt, gt, video_id="v", object_id="1")
    s = acc.summary()
    assert s["J"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["F"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["J&F"] == pytest.approx(0.75)


def test_coco_map_with_perfect_ranking_matches_lbdt_ap():
    rng = np.random.default_rng(0)
    acc = M.MetricAccumulator(coco=True)
    h = w = 32
    for k in range(60):
        gt = _mask(h, w, (8, 24, 8, 24))
        shift = int(rng.integers(0, 14))
        pred = _mask(h, w, (8, 24, 8 + shift, 24 + shift))
        i, u = M.intersection_union(pred, gt)
        acc.add(f"s{k:03d}", pred, gt, score=i / u)  # confidence ranks by true IoU
    s = acc.summary()
    assert s["mAP_coco"] == pytest.approx(s["AP"], abs=0.012)


def test_coco_map_uninformative_scores_is_lower():
    acc = M.MetricAccumulator(coco=True)
    gt = _mask(16, 16, (4, 12, 4, 12))
    for k in range(20):
        pred = gt if k % 2 else np.zeros_like(gt)
        acc.add(f"s{k:02d}", pred, gt, score=0.5)  # ties: order by sample id alternates miss/hit
    s = acc.summary()
    assert s["AP"] == pytest.approx(0.5)
    assert s["mAP_coco"] < 0.45


def test_mask_confidence():
    prob = np.array([[0.9, 0.7], [0.2, 0.1]])
    assert M.mask_confidence(prob, prob > 0.5) == pytest.approx(0.8)
    assert M.mask_confidence(prob, np.zeros((2, 2))) == 0.0


def test_lbdt_gt_roundtrip_matches_torch():
    gt = np.zeros((24, 40), bool)
    gt[5:11, 7:30] = True
    ours = M.lbdt_gt_roundtrip(gt, size=16)
    t = torch.from_numpy(gt.astype(np.float32))[None, None]
    small = (F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=True) > 0).float()
    ref = F.interpolate(small, size=(24, 40), mode="nearest")[0, 0].numpy() > 0.5
    assert (ours == ref).all()
    assert ours.sum() >= gt.sum()  # > 0 after bilinear slightly dilates


def test_resize_nearest_matches_torch():
    m = np.random.default_rng(1).random((10, 13)) > 0.5
    ref = F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=(23, 7), mode="nearest")
    assert (M.resize_nearest(m, (23, 7)) == (ref[0, 0].numpy() > 0.5)).all()


def test_accumulator_merge_and_state_roundtrip():
    a, b = M.MetricAccumulator(coco=True), M.MetricAccumulator(coco=True)
    gt = _mask(8, 8, (0, 4, 0, 4))
    a.add("x", gt, gt, score=0.9)
    b.add("y", _mask(8, 8, (0, 4, 2, 6)), gt, score=0.3)
    whole = M.MetricAccumulator(coco=True)
    whole.load_state(a.state())
    whole.load_state(b.state())
    a.merge(b)
    assert whole.summary() == a.summary()
