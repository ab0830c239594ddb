"""Wolfe's minimum-norm-point algorithm: the point of a polytope conv(P) closest to the origin.

The constrained-RL target search (docs/constrained_rl.md, 'The mixed policy') searches the convex hull of the
policies' measurement vectors; its corral update is Wolfe's: keep an affinely independent active set, minimize the
norm over its affine hull, step back to the hull when a weight goes non-positive, and drop zero-weight points. The
active set never exceeds d + 1 points in R^d, which is why a mixed policy built this way stores at most d + 1
policies.

Optimality certificate at the returned x: <x, p> >= ||x||^2 for every p in P (no point of P lies on the origin's
side of the hyperplane through x orthogonal to x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from campaign_core import InputError


@dataclass(frozen=True)
class MinNormPoint:
    """x = sum_i weights[i] * points[active[i]]: the minimum-norm point, its convex weights and the active set.

    gap : max_p (||x||^2 - <x, p>) over all points, <= 0 up to `tolerance` at the optimum (the certificate).
    iterations : major cycles (one new point each); minor_cycles : step-backs to the hull.
    """

    x: np.ndarray
    weights: np.ndarray
    active: np.ndarray
    gap: float
    iterations: int
    minor_cycles: int

    def to_frame(self) -> pd.DataFrame:
        """One row per active point: `point` (its row in the input) and `weight`."""
        return pd.DataFrame({"point": np.asarray(self.active, dtype=np.int64), "weight": self.weights})

    def summary(self) -> dict[str, float]:
        """Headline figures: the distance of the hull to the origin (`norm`), the certificate `gap`, the active
        points, iterations and minor cycles."""
        return {"norm": float(np.linalg.norm(self.x)), "gap": self.gap, "n_active": len(self.active),
                "iterations": self.iterations, "minor_cycles": self.minor_cycles}


def affine_minimizer(corral: np.ndarray, rays: np.ndarray | None = None) -> np.ndarray:
    """Weights alpha of the minimum-norm point of alpha @ corral where the weights of the points sum to 1 and those
    of the rays (rows marked in `rays`) are free: the affine hull of the points plus the span of the rays.

    Solves the KKT system by least squares, so a nearly degenerate corral still gives the minimum-norm solution."""
    k = corral.shape[0]
    counted = np.ones(k) if rays is None else (~np.asarray(rays, dtype=bool)).astype(float)
    system = np.zeros((k + 1, k + 1))
    system[:k, :k] = corral @ corral.T
    system[:k, k] = counted
    system[k, :k] = counted
    right = np.zeros(k + 1)
    right[k] = 1.0
    solution = np.linalg.lstsq(system, right, rcond=None)[0]
    return solution[:k]


def wolfe_step(points: np.ndarray, active: list[int], weights: np.ndarray, tolerance: float,
               rays: np.ndarray | None = None) -> tuple[list[int], np.ndarray, int]:
    """One corral update after a new element joined `active` (with weight 0): minimize over the affine hull, and
    while that leaves the hull, step back to its boundary and drop the elements whose weight reached 0.

    `rays` marks rows of `points` that are directions (their weights need only be >= 0, not sum to 1: the hull is
    then conv(points) + cone(rays)). Returns the new active set, its weights and the number of step-backs."""
    is_ray = np.zeros(len(points), dtype=bool) if rays is None else np.asarray(rays, dtype=bool)
    minor = 0
    while True:
        alpha = affine_minimizer(points[active], is_ray[active])
        if (alpha > tolerance).all():
            return active, alpha, minor
        minor += 1
        leaving = alpha <= tolerance
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(leaving, weights / (weights - alpha), np.inf)
        theta = float(np.clip(np.min(ratios), 0.0, 1.0))
        weights = weights + theta * (alpha - weights)
        keep = weights > tolerance
        if keep.all():  # numerical corner: drop the smallest
            keep[np.argmin(weights)] = False
        active = [index for index, kept in zip(active, keep, strict=True) if kept]
        weights = weights[keep]
        mass = weights[~is_ray[active]].sum()
        weights = np.where(is_ray[active], weights, weights / mass)


def min_norm_point(points, *, tolerance: float = 1e-10, max_iterations: int = 1000) -> MinNormPoint:
    """The point of conv(points) nearest the origin (points: (m, d) array, finite), by Wolfe's algorithm."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[0] == 0 or points.shape[1] == 0:
        raise InputError(f"points: must be a non-empty (m, d) array, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise InputError(f"points: {int((~np.isfinite(points)).sum())} entries are NaN or infinite")
    scale = max(1.0, float(np.abs(points).max()))
    tol = tolerance * scale * scale
    start = int(np.argmin((points ** 2).sum(axis=1)))
    active, weights = [start], np.ones(1)
    minor_total = 0
    for iteration in range(1, max_iterations + 1):
        x = weights @ points[active]
        products = points @ x
        candidate = int(np.argmin(products))
        if products[candidate] >= x @ x - tol or candidate in active:
            return MinNormPoint(x, weights, np.asarray(active), float(x @ x - products.min()), iteration - 1,
                                minor_total)
        active, weights, minor = wolfe_step(points, [*active, candidate], np.r_[weights, 0.0], tol)
        minor_total += minor
    raise RuntimeError(f"min_norm_point: no convergence in {max_iterations} iterations")
