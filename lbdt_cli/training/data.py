"""Training data: datasets of (frame, previous frame, mask, sentence), batching, a resumable sampler."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler

from lbdt_cli.errors import InputError
from lbdt_cli.model.preprocess import frame_difference, normalize_frames


class RvosTrainSet(Dataset):
    """Adapts an evaluation reader (lbdt_cli.data.common.RvosDataset) to training items."""

    def __init__(self, reader, samples=None):
        self.reader = reader
        self.samples = list(reader.samples if samples is None else samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict:
        s = self.samples[idx]
        names = [s.frame] if s.prev_frame == s.frame else [s.frame, s.prev_frame]
        frames = self.reader.load_frames(s.video_id, names)
        mask, _void = self.reader.load_gt(s)
        return {"frame": frames[s.frame], "prev_frame": frames[s.prev_frame], "mask": mask.astype(bool),
                "text": s.expression, "kind": "", "group": self.reader.sample_group(s) or ""}


def _holdout(video_id: str, fraction: float) -> bool:
    """A stable video-level split for datasets without annotated validation data."""
    h = int(hashlib.sha1(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < fraction


def build_datasets(cfg, interval: int) -> tuple[Dataset, Dataset]:
    """(train, val) datasets for cfg.dataset."""
    if cfg.dataset == "shapes":
        from lbdt_cli.data.shapes_generator import ShapesDataset, read_shapes

        if cfg.root:
            try:
                clips = read_shapes(cfg.root)
            except (FileNotFoundError, ValueError) as exc:
                raise InputError(str(exc)) from None
            n_val = max(1, len(clips) // 10) if len(clips) > 1 else 0
            if n_val == 0:
                raise InputError(f"{cfg.root} holds one clip; training needs at least 2 (1 for validation)")
            return (ShapesDataset(clips=clips[n_val:], interval=interval),
                    ShapesDataset(clips=clips[:n_val], interval=interval))
        kw = dict(size=cfg.shapes_size, num_frames=cfg.shapes_frames, interval=interval)
        return (ShapesDataset("train", cfg.shapes_train_clips, **kw),
                ShapesDataset("val", cfg.shapes_val_clips, **kw))

    from lbdt_cli.data import dataset_class, open_dataset

    cls = dataset_class(cfg.dataset)
    reader = open_dataset(cfg.dataset, cfg.root, split=cls.train_split, interval=interval)
    if cls.val_split is not None:
        return RvosTrainSet(reader), RvosTrainSet(open_dataset(cfg.dataset, cfg.root, split=cls.val_split,
                                                               interval=interval))
    # no annotated validation split (Ref-YouTube-VOS valid has no public masks, J-HMDB has no train split)
    tr = [s for s in reader.samples if not _holdout(s.video_id, 0.05)]
    va = [s for s in reader.samples if _holdout(s.video_id, 0.05)]
    return RvosTrainSet(reader, tr), RvosTrainSet(reader, va)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch order is a pure function of (seed, epoch), that can start part-way
    through an epoch (for exact resume), and can draw a fixed number of samples per epoch."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 epoch_samples: int | None = None, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        total = len(dataset) if epoch_samples is None else min(epoch_samples, len(dataset))
        self.total_draw = total
        self.num_samples = (total // num_replicas) if drop_last else math.ceil(total / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.start = 0  # samples of this rank's epoch order to skip

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g)[: self.total_draw].tolist()
        else:
            indices = list(range(self.total_draw))
        if len(indices) < self.total_size:  # pad by repeating, as DistributedSampler does
            indices += (indices * math.ceil(self.total_size / max(len(indices), 1)))[: self.total_size - len(indices)]
        indices = indices[: self.total_size][self.rank : self.total_size : self.num_replicas]
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def collate(items: list[dict]) -> dict:
    """Stack raw items; frames of different sizes stay as a list (resized per item in `prepare_batch`)."""
    out = {"text": [it["text"] for it in items],
           "group": [it.get("group", "") for it in items],
           "kind": [it.get("kind", "") for it in items]}
    same = len({it["frame"].shape for it in items}) == 1
    for key in ("frame", "prev_frame", "mask"):
        arrs = [torch.from_numpy(np.ascontiguousarray(it[key])) for it in items]
        out[key] = torch.stack(arrs) if same else arrs
    return out


def _resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """bool [B,H,W] -> float {0,1} [B,1,size,size] (area-weighted, then >= 0.5)."""
    m = mask[:, None].float()
    if m.shape[-2:] != (size, size):
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m


def prepare_batch(batch: dict, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image [B,3,S,S], frame difference [B,3,S,S], target mask [B,1,S,S]) on `device`."""
    frames, prev, masks = batch["frame"], batch["prev_frame"], batch["mask"]
    if isinstance(frames, list):
        image = torch.cat([normalize_frames(f.to(device), size) for f in frames])
        previous = torch.cat([normalize_frames(f.to(device), size) for f in prev])
        target = torch.cat([_resize_mask(m[None].to(device), size) for m in masks])
    else:
        image = normalize_frames(frames.to(device), size)
        previous = normalize_frames(prev.to(device), size)
        target = _resize_mask(masks.to(device), size)
    return image, frame_difference(image, previous), target
