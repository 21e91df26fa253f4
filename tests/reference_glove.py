"""A plain, line-at-a-time reading of the GloVe text format, written from the rules in
`lbdt_cli/glove.py`'s docstring (the parser the first version of the tool used, plus the rule for
a cut-off last line). The fast parser must give exactly the same rows.
"""

from __future__ import annotations

import numpy as np


class ShortLine(Exception):
    pass


def reference_parse(path) -> tuple[list[str], np.ndarray]:
    words, rows, dim = [], [], None
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            parts = raw.rstrip(b"\r\n").rstrip(b" ").split(b" ")
            if len(parts) < 3:
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) < dim + 1:
                if not raw.endswith(b"\n"):  # the cut-off last line of an unterminated file
                    continue
                raise ShortLine(lineno)
            try:
                word = b" ".join(parts[: len(parts) - dim]).decode("utf-8")
                row = np.asarray(parts[len(parts) - dim :], dtype=np.float32)
            except (UnicodeDecodeError, ValueError):
                continue
            words.append(word)
            rows.append(row)
    return words, (np.stack(rows) if rows else np.zeros((0, dim or 0), np.float32))
