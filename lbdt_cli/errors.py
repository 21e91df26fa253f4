"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class LbdtError(Exception):
    """An error caused by the user's input (file, flag, checkpoint), not by a bug."""

    exit_code = 2


class InputError(LbdtError):
    """A missing, unreadable or malformed input file (video, dataset, GloVe file)."""

    exit_code = 3


class CheckpointError(LbdtError):
    """A file that is not a checkpoint, or a checkpoint of another architecture."""

    exit_code = 4


class OutputError(LbdtError):
    """An output that exists already (without --overwrite) or cannot be written."""

    exit_code = 5
