"""Which layers may go to int8: per-group sensitivity of a trained checkpoint, measured.

    python scripts/int8_sensitivity.py --checkpoint weights/lbdt_shapes_demo.pt --val-clips 8

1. J (appearance / motion groups) of the fp32 export and of the all-int8 export on generated
   Moving Shapes clips of the *val* split (the test split stays for `lbdt eval`).
2. For each module group, the all-int8 export with only that group kept in float: how much J
   that group's quantisation costs.
3. Greedy: keep the costliest groups in float until both groups' J are within --margin of fp32.

Prints one line per export and the chosen --keep-fp list (JSON with --json-out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Module groups (a '+' joins patterns kept in float together).
GROUPS = ["spatial_encoder.conv1+spatial_encoder.layer1", "spatial_encoder.layer2+spatial_encoder.layer3+"
          "spatial_encoder.layer4", "temporal_encoder.conv1+temporal_encoder.layer1", "temporal_encoder.layer2+"
          "temporal_encoder.layer3+temporal_encoder.layer4", "transfer.stage4", "transfer.stage5",
          "decoder.refine_*+decoder.bca", "decoder.head"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="weights/lbdt_shapes_demo.pt")
    ap.add_argument("--format", default="openvino", choices=("openvino", "onnx"))
    ap.add_argument("--val-clips", type=int, default=8)
    ap.add_argument("--calibration-samples", type=int, default=32)
    ap.add_argument("--margin", type=float, default=0.005, help="J margin on val (the bar on test is 0.01)")
    ap.add_argument("--groups", default=",".join(GROUPS))
    ap.add_argument("--every", type=int, default=4, help="score every N-th sample (frames of a clip are alike)")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    from lbdt_cli.backends.export import export_model
    from lbdt_cli.data.shapes_reader import ShapesEval
    from lbdt_cli.engine import Predictor
    from lbdt_cli.evaluation import evaluate_model

    ds = ShapesEval(None, split="val", num_clips=args.val_clips)
    ds.samples = ds.samples[:: args.every]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="lbdt-int8-"))

    def measure(label: str, int8: bool, keep: list[str]) -> dict:
        t0 = time.perf_counter()
        out = tmp / f"e{len(rows)}"
        m = export_model(args.checkpoint, args.format, out, int8=int8, keep_fp=keep,
                         calibration_samples=args.calibration_samples, parity_samples=4)  # fmt: skip
        predictor = Predictor.from_checkpoint(out, device="cpu")
        res = evaluate_model(ds, predictor)
        g = res.metrics["by_group"]
        row = {"label": label, "int8": int8, "keep_fp": keep, "precision": predictor.precision,
               "J_appearance": g["appearance"]["J"], "J_motion": g["motion"]["J"],
               "quantized_nodes_kept": (m.get("quantization") or {}).get("keep_fp_nodes"),
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        rows.append(row)
        print(f"{label:40s} J appearance {row['J_appearance']:.4f}  J motion {row['J_motion']:.4f}  "
              f"({row['precision']}, {row['seconds']} s)", flush=True)
        return row

    fp32 = measure("fp32", False, [])
    full = measure("int8, every layer", True, [])

    def drop(r):
        return max(fp32["J_appearance"] - r["J_appearance"], fp32["J_motion"] - r["J_motion"])

    groups = [g for g in args.groups.split(",") if g]
    cost = {}
    if drop(full) > args.margin:
        for g in groups:
            r = measure(f"int8, {g} kept in float", True, g.split("+"))
            cost[g] = drop(full) - drop(r)  # J recovered by keeping g in float
    keep: list[str] = []
    final = full
    for g in sorted(cost, key=cost.get, reverse=True):
        if drop(final) <= args.margin or cost[g] <= 0:
            break
        keep += g.split("+")
        final = measure(f"int8, kept: {','.join(keep)}", True, list(keep))
    print(f"\nfp32 J appearance {fp32['J_appearance']:.4f} motion {fp32['J_motion']:.4f}; chosen --keep-fp "
          f"{','.join(keep) or '(none)'}: J appearance {final['J_appearance']:.4f} motion {final['J_motion']:.4f} "
          f"(largest drop {drop(final):+.4f})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"val_clips": args.val_clips, "rows": rows, "cost": cost,
                                                   "keep_fp": keep}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
