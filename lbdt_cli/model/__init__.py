"""The LBDT model: nn.Modules, named configs, text side and checkpoints. No file or video I/O
beyond reading checkpoints and GloVe files."""

from lbdt_cli.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from lbdt_cli.model.configs import CONFIGS, LBDTConfig, get_config, list_configs
from lbdt_cli.model.lbdt import LBDT, TextFeatures


def build_model(config="lbdt1", **overrides) -> LBDT:
    """Build any named config (`lbdt1`, `lbdt4`, `small`, `tiny`) or an LBDTConfig, with overrides."""
    return LBDT(get_config(config, **overrides))


__all__ = ["LBDT", "LBDTConfig", "CONFIGS", "TextFeatures", "build_model", "get_config", "list_configs",
           "load_checkpoint", "read_checkpoint", "save_checkpoint"]
