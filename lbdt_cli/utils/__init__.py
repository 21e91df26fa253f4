"""Small shared helpers (atomic output writing)."""

from lbdt_cli.utils.atomic import atomic_dir, atomic_path, check_writable_output, remove_path

__all__ = ["atomic_dir", "atomic_path", "check_writable_output", "remove_path"]
