"""Text from users and files made safe to show on a terminal.

An expression or a file name may hold control characters: an ESC sequence written raw can clear,
retitle or recolour the terminal, and bidirectional overrides can make text read differently from
what it is. `printable` shows every such character escaped (`\\x1b`, `\\u202e`), and `markup_safe`
also escapes rich's `[style]` markup so that the text is shown as typed.
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

__all__ = ["printable", "markup_safe"]

_KEEP = {"\n", "\t"}


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """`text` with control and format characters (C0, C1, DEL, bidi controls) written as escapes."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch in _KEEP or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
                   else _escaped(ch) for ch in s)  # fmt: skip


def markup_safe(text: object) -> str:
    """`printable(text)` with rich markup escaped, for `Console.print` with markup on."""
    return escape(printable(text))
