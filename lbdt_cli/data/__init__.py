"""Dataset readers (A2D/J-HMDB/Ref-YouTube-VOS/DAVIS) and the built-in Moving Shapes Sentences benchmark.

`READERS` is the name -> reader-class table; each class carries its dataset's facts (default split,
training splits, look-back interval, the paper's numbers). The readers import `data.common`, never this
table, so there is no import circle.

    ds = open_dataset("a2d", "/data/a2d", "test")
    ds.samples[0].load_gt()
"""

from __future__ import annotations

import os

from lbdt_cli.data.a2d import A2DSentences
from lbdt_cli.data.common import RvosDataset, Sample
from lbdt_cli.data.davis import RefDAVIS
from lbdt_cli.data.jhmdb import JHMDBSentences
from lbdt_cli.data.mevis import MeViS
from lbdt_cli.data.shapes_reader import ShapesEval
from lbdt_cli.data.ytvos import ReferYouTubeVOS
from lbdt_cli.errors import LbdtError

READERS: dict[str, type[RvosDataset]] = {cls.name: cls for cls in (
    A2DSentences, JHMDBSentences, ReferYouTubeVOS, RefDAVIS, MeViS, ShapesEval)}
DATASETS = tuple(READERS)
# datasets `lbdt train` can learn from (a train split, and a validation split or a held-out share)
TRAIN_DATASETS = tuple(n for n, cls in READERS.items() if cls.train_split is not None)


def dataset_class(name: str, what: str = "dataset") -> type[RvosDataset]:
    """The reader class registered under `name`; LbdtError naming `what` (e.g. "--dataset") if none."""
    try:
        return READERS[name]
    except KeyError:
        raise LbdtError(f"unknown {what} {name!r} (choose from {', '.join(DATASETS)})") from None


def open_dataset(name: str, root: str | os.PathLike | None, split: str | None = None, **kwargs) -> RvosDataset:
    """Open a dataset reader by name; `split` defaults to the dataset's own (`cls.default_split`)."""
    cls = dataset_class(name)
    if root is None and cls.needs_root:
        raise LbdtError(f"--root is required for --dataset {name}")
    return cls(root, split=split or cls.default_split, **kwargs)


__all__ = ["DATASETS", "READERS", "TRAIN_DATASETS", "RvosDataset", "Sample", "dataset_class", "open_dataset"]
