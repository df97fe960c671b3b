"""Helpers outside the training / inference path (drawing)."""
