"""`lbdt train`: the paper's training recipe on shapes, A2D, Ref-YouTube-VOS or J-HMDB (see docs/train.md)."""

from lbdt_cli.training.config import TRAIN_DATASETS, TrainConfig, make_config, read_config_file
from lbdt_cli.training.loop import export_weights, train, validate
from lbdt_cli.training.loss import dice_loss, lbdt_loss

__all__ = ["TRAIN_DATASETS", "TrainConfig", "make_config", "read_config_file", "train", "validate",
           "export_weights", "dice_loss", "lbdt_loss"]
