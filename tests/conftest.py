import os
from dataclasses import dataclass

import pytest

# Tests run on 2 shared cores; more threads only add contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run `lbdt ARGS...` in-process (no interpreter start-up) and capture its output."""

    def run(*args) -> CliResult:
        from lbdt_cli.cli import main

        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a busy 2-core machine, 2 spinning OpenMP threads run ~10x slower than 1; tiny models
    gain nothing from the second thread anyway."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised `tiny` model saved in our checkpoint format (shared by the eval tests)."""
    from lbdt_cli.model import build_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model("tiny"))
    return path


@pytest.fixture(scope="session")
def ckpt(tiny_checkpoint):
    """The `tiny` checkpoint under the short name the video tests use."""
    return tiny_checkpoint


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Small clips in every container (tests/video_clips.py), made once per session."""
    from video_clips import make_clips

    return make_clips(tmp_path_factory.getbasetemp() / "video_clips")
