"""One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) for keypoint trajectories.

Why this filter: keypoints of a still person jitter by a pixel or two from frame to frame, while a
moving limb must not lag. The One-Euro filter is a low-pass filter whose cutoff rises with speed:
heavy smoothing when still, little when moving. It needs no future frames (webcam-friendly).

Speeds are divided by a per-person scale (the person's box height) before they raise the cutoff,
so ``beta`` means the same for a person 50 or 500 pixels tall: cutoff = min_cutoff + beta * speed in
person heights per second.
"""
import math
from typing import Optional

import numpy as np

__all__ = ["OneEuroFilter"]


def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
    """Smoothing factor of an exponential filter with this cutoff (Hz) at sampling interval dt (s)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters an array signal (e.g. (K, 2) keypoint coordinates) sample by sample.

    Args:
        min_cutoff: cutoff frequency (Hz) when still; lower = smoother, more lag at low speed.
        beta: how fast the cutoff rises with speed (per person height per second); higher = less lag.
        d_cutoff: cutoff (Hz) of the filter on the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0):
        for name, value in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff)):
            if not value > 0:
                raise ValueError(f"OneEuroFilter: {name} must be > 0, got {value}")
        if beta < 0:
            raise ValueError(f"OneEuroFilter: beta must be >= 0, got {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0, valid: Optional[np.ndarray] = None) -> np.ndarray:
        """The filtered value of sample `x` taken at time `t` (seconds, increasing).

        scale: the size that speeds are measured in (e.g. the person's height in pixels).
        valid: optional boolean mask over the leading axis of `x` (e.g. keypoints scored high enough);
        other entries are returned as given and their filtering restarts from them.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if not dt > 0:
            raise ValueError(f"OneEuroFilter: time must increase, got {t} after {self._t}")
        dx = (x - self._x) / dt
        a_d = _alpha(np.asarray(self.d_cutoff), dt)
        dx_hat = a_d * dx + (1 - a_d) * self._dx
        speed = np.abs(dx_hat) / max(float(scale), 1e-6)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        x_hat = a * x + (1 - a) * self._x
        if valid is not None:
            # Unscored entries pass through and restart from here (no blending with a stale position).
            restart = ~np.asarray(valid, dtype=bool)
            x_hat[restart] = x[restart]
            dx_hat[restart] = 0.0
        self._x, self._dx, self._t = x_hat, dx_hat, float(t)
        return x_hat.copy()
