"""Data: importing this registers the datasets."""
from . import datasets  # noqa: F401
