"""Print how far our LBDT is from an independent re-implementation of the released model, on
random weights laid out like the authors' LBDT-1 / LBDT-4 files (fp32, CPU).

    python scripts/equivalence.py [--size 320]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_layout import random_official_state_dict  # noqa: E402
from reference_lbdt import reference_forward  # noqa: E402

from lbdt_cli.model import load_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, args.size, args.size, generator=g)
    diff = (image - torch.randn(2, 3, args.size, args.size, generator=g)).abs()
    words = torch.randn(2, 25, 300, generator=g) * 0.3
    mask = torch.zeros(2, 25)
    mask[0, :4], mask[1, :9] = 1, 1
    words[0, 4:], words[1, 9:] = 0, 0
    for layers in (1, 4):
        sd = random_official_state_dict(layers, seed=layers, prefix="module.")
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(sd, Path(tmp) / "lbdt.pth")
            model = load_checkpoint(Path(tmp) / "lbdt.pth")
        with torch.no_grad():
            ours = model(image, diff, words, mask)
            ref = reference_forward({k[len("module."):]: v for k, v in sd.items()}, image, diff, words, mask)
        err, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
        print(f"LBDT-{layers} 2x{args.size}x{args.size}: max|ours-ref| = {err:.2e}, max|logit| = {scale:.2f}, "
              f"relative = {err / scale:.1e} (bar: 1e-4)")


if __name__ == "__main__":
    main()
