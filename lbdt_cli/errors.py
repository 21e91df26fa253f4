"""User-facing errors: the CLI prints these as one line and exits non-zero.

Exit codes: 0 ok, 1 a bug, 2 bad argument, 3 bad input file, 4 bad checkpoint, 5 output exists or
cannot be written, 6 some clips failed (`segment --keep-going`: the others were done),
130 interrupted (Ctrl-C), 128 + N killed by signal N and cleaned up (143 SIGTERM, 129 SIGHUP).
"""

SOME_FAILED_EXIT = 6


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
