"""Shared geometry for the tests: rotations for oblique direction matrices."""

import numpy as np


def rotation(a, b, c):
    """Rotation by angles a, b, c (radians) about x, then y, then z: an oblique but proper direction matrix."""
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz
