"""Small shared helpers."""

from keras_mnas.utils.io import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["atomic_write_bytes", "atomic_write_json", "read_json"]
