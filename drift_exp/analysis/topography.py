"""The semantic reward topography of paper §4.3, as pure functions on numpy arrays.

For one prompt, the responses of every method are points x_i in a 2-D (UMAP) plane with rewards r_i:

1. ``reward_weights``: the reward model's scores are unbounded, KDE weights must be >= 0, so
   rewards are mapped to w_i >= 0 (default: min-max over all of the prompt's responses, so the
   paper's r in [0, 1]).
2. ``make_grid``: one regular grid g over the bounding box of all points (padded), shared by
   every surface.
3. ``kde_covariance``: ONE kernel covariance (bandwidth), Scott's rule of scipy.stats.gaussian_kde
   fitted to all points with their weights; every surface uses it ("the same grid and bandwidth").
4. ``kde_surface``: the reward-weighted Gaussian KDE  sum_i w_i N(g; x_i, C) / sum_i w_i  on the
   grid (equal to gaussian_kde(points, weights=w).evaluate(grid) when C is that kde's covariance).
5. ``normalize_surface``: each surface scaled to [0, 1] (paper: Z_all(g) in [0, 1]); default
   "max": divided by its maximum over the grid.
6. ``high_region``: z_high = Quantile(Z_all, 0.8) over the grid cells (numpy's linear
   interpolation), H = {g : Z_all(g) >= z_high}.
7. ``coverage``: D_m is built exactly like Z_all from method m's responses only (its own points and
   weights, the shared grid and covariance, the same normalization), and
   S_m = {g in H : D_m(g) >= z_high},  Share(m) = |S_m| / |H|.

Choices where the paper is not explicit (all parameters of ``topography``):

* threshold for D_m: the paper writes the SAME symbol z_high in S_m as in H, i.e. the 0.8 quantile
  of Z_all, not a quantile of D_m; that is the default (``method_threshold=None``); a float
  overrides it.
* normalization of D_m: "a corresponding surface" is read as the same construction as Z_all,
  including the scaling to [0, 1] by its own maximum (``method_scale="self"``). With
  ``method_scale="shared"`` D_m is instead the un-normalised weighted kernel SUM of method m's
  points divided by the maximum of the kernel sum of all points, so that the D_m add up to Z_all
  and a method must carry the reward mass on its own.
* reward -> weight map: ``reward_transform`` ("minmax" default, "sigmoid", "rank", "none").
* grid: ``grid_size`` cells per axis (default 100) over the bounding box padded by ``pad`` times
  its extent on each side (default 0.1), or explicit ``bounds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

RewardTransform = Literal["minmax", "sigmoid", "rank", "none"]
Normalization = Literal["max", "minmax"]
MethodScale = Literal["self", "shared"]


@dataclass(frozen=True)
class Grid:
    """A regular grid: xs (nx,), ys (ny,); surfaces have shape (ny, nx), row = y."""

    xs: np.ndarray
    ys: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    @property
    def points(self) -> np.ndarray:
        """(ny * nx, 2) coordinates in row-major order of the surfaces."""
        gx, gy = np.meshgrid(self.xs, self.ys)
        return np.column_stack([gx.ravel(), gy.ravel()])


def make_grid(points: np.ndarray, size: int | tuple[int, int] = 100, pad: float = 0.1,
              bounds: tuple[float, float, float, float] | None = None) -> Grid:
    """A size x size grid (or (nx, ny)) over bounds=(xmin, xmax, ymin, ymax), by default the points'
    bounding box widened by pad x its extent on each side (a degenerate extent is widened by 1)."""
    nx, ny = (size, size) if isinstance(size, int) else size
    if nx < 2 or ny < 2:
        raise ValueError(f"grid size must be >= 2 per axis, got {(nx, ny)}")
    if bounds is None:
        pts = np.asarray(points, dtype=float)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        extent = np.where(hi - lo > 0, hi - lo, 1.0)
        lo, hi = lo - pad * extent, hi + pad * extent
        bounds = (lo[0], hi[0], lo[1], hi[1])
    xmin, xmax, ymin, ymax = bounds
    return Grid(np.linspace(xmin, xmax, nx), np.linspace(ymin, ymax, ny))


def reward_weights(rewards: np.ndarray, transform: RewardTransform = "minmax") -> np.ndarray:
    """Non-negative KDE weights from reward-model scores (higher reward, more weight).

    minmax: (r - min) / (max - min), all ones when every reward is equal; sigmoid: 1 / (1 + e^-r);
    rank: rank / (n - 1) in [0, 1] (ties share their average rank); none: r as is (must be >= 0).
    """
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1 or not np.all(np.isfinite(r)):
        raise ValueError("rewards must be a finite 1-D array")
    if transform == "minmax":
        span = r.max() - r.min() if r.size else 0.0
        return (r - r.min()) / span if span > 0 else np.ones_like(r)
    if transform == "sigmoid":
        return 1.0 / (1.0 + np.exp(-r))
    if transform == "rank":
        if r.size < 2:
            return np.ones_like(r)
        from scipy.stats import rankdata

        return (rankdata(r) - 1.0) / (r.size - 1.0)
    if transform == "none":
        if np.any(r < 0):
            raise ValueError("reward_transform='none' needs non-negative rewards")
        return r.copy()
    raise ValueError(f"unknown reward transform {transform!r}")


def kde_covariance(points: np.ndarray, weights: np.ndarray | None = None,
                   bw_method: str | float = "scott", ridge: float = 1e-3) -> np.ndarray:
    """The kernel covariance of scipy.stats.gaussian_kde(points.T, bw_method, weights).

    Degenerate point sets (fewer than 3 weighted points, collinear or coincident points), on which
    gaussian_kde fails, get the same formula (weighted data covariance x factor^2, factor from
    Scott's / Silverman's rule on the effective sample size) plus ridge x its mean variance on the
    diagonal, or an isotropic kernel of standard deviation 0.1 x the points' extent (at least 0.1)
    when all points coincide.
    """
    from scipy.stats import gaussian_kde

    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=float)
    if np.count_nonzero(w) >= 3:
        try:
            cov = np.array(gaussian_kde(pts.T, bw_method=bw_method, weights=w).covariance, dtype=float)
            np.linalg.cholesky(cov)
            return cov
        except (np.linalg.LinAlgError, ValueError):
            pass
    if w.sum() <= 0:
        w = np.ones(len(pts))
    w = w / w.sum()
    n_eff = 1.0 / np.sum(w**2)
    # d = 2: Scott's n^(-1/(d+4)) and Silverman's (n (d+2) / 4)^(-1/(d+4)) coincide.
    factor = n_eff ** (-1.0 / 6) if isinstance(bw_method, str) else float(bw_method)
    data_cov = np.atleast_2d(np.cov(pts.T, aweights=w)) if np.count_nonzero(w) >= 2 else np.zeros((2, 2))
    cov = data_cov * factor**2
    scale = np.trace(cov) / 2
    if scale > 0:
        return cov + ridge * scale * np.eye(2)
    extent = float(np.ptp(pts, axis=0).max()) if len(pts) else 0.0
    return np.eye(2) * (0.1 * max(extent, 1.0)) ** 2


def kde_surface(points: np.ndarray, weights: np.ndarray, grid: Grid, covariance: np.ndarray,
                unnormalized: bool = False) -> np.ndarray:
    """Weighted Gaussian KDE on the grid, shape (ny, nx): sum_i w_i N(g; x_i, C) / sum_i w_i.

    unnormalized=True returns the kernel sum  sum_i w_i N(g; x_i, C)  (no division by sum w).
    All-zero weights (or no points) give an all-zero surface.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    w = np.asarray(weights, dtype=float).reshape(-1)
    if len(pts) != len(w):
        raise ValueError(f"{len(pts)} points but {len(w)} weights")
    if np.any(w < 0):
        raise ValueError("KDE weights must be non-negative")
    total = w.sum()
    if len(pts) == 0 or total <= 0:
        return np.zeros(grid.shape)
    cov = np.asarray(covariance, dtype=float)
    inv = np.linalg.inv(cov)
    norm = 1.0 / (2.0 * np.pi * np.sqrt(np.linalg.det(cov)))
    g = grid.points
    out = np.zeros(len(g))
    for start in range(0, len(pts), 256):  # bounded memory: 256 points x grid at a time
        d = g[:, None, :] - pts[None, start:start + 256, :]
        maha = np.einsum("gpi,ij,gpj->gp", d, inv, d)
        out += np.exp(-0.5 * maha) @ w[start:start + 256]
    out *= norm
    if not unnormalized:
        out /= total
    return out.reshape(grid.shape)


def normalize_surface(z: np.ndarray, mode: Normalization = "max", scale: float | None = None) -> np.ndarray:
    """Scale a non-negative surface to [0, 1]: divided by its max ("max") or min-max ("minmax").

    scale, when given, replaces the maximum (mode "max" only). An all-zero surface stays zero.
    """
    z = np.asarray(z, dtype=float)
    if mode == "max":
        top = z.max() if scale is None else scale
        return z / top if top > 0 else np.zeros_like(z)
    if mode == "minmax":
        lo, hi = z.min(), z.max()
        return (z - lo) / (hi - lo) if hi > lo else np.zeros_like(z)
    raise ValueError(f"unknown normalization {mode!r}")


def high_region(z_all: np.ndarray, quantile: float = 0.8) -> tuple[np.ndarray, float]:
    """(H, z_high): z_high = Quantile(Z_all, q) over all grid cells (numpy's default linear
    interpolation), H = the boolean mask Z_all >= z_high."""
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    z = np.asarray(z_all, dtype=float)
    z_high = float(np.quantile(z, quantile))
    return z >= z_high, z_high


def covered_cells(d_m: np.ndarray, high: np.ndarray, threshold: float) -> np.ndarray:
    """S_m as a mask: the cells of H where D_m >= threshold."""
    return np.asarray(high, dtype=bool) & (np.asarray(d_m, dtype=float) >= threshold)


def coverage_share(d_m: np.ndarray, high: np.ndarray, threshold: float) -> float:
    """Share(m) = |S_m| / |H|; 0.0 when H is empty."""
    n_high = int(np.count_nonzero(high))
    return int(np.count_nonzero(covered_cells(d_m, high, threshold))) / n_high if n_high else 0.0


@dataclass
class Topography:
    """Everything one prompt's figure and shares need."""

    grid: Grid
    points: np.ndarray  # (n, 2)
    rewards: np.ndarray  # (n,) raw scores
    weights: np.ndarray  # (n,) KDE weights
    labels: np.ndarray  # (n,) method per point
    covariance: np.ndarray  # (2, 2) shared kernel covariance
    z_all: np.ndarray  # (ny, nx) in [0, 1]
    high: np.ndarray  # (ny, nx) bool
    z_high: float
    threshold: float  # what D_m is compared with (z_high unless overridden)
    surfaces: dict[str, np.ndarray] = field(default_factory=dict)  # D_m
    covered: dict[str, np.ndarray] = field(default_factory=dict)  # S_m masks
    shares: dict[str, float] = field(default_factory=dict)


def topography(points: np.ndarray, rewards: np.ndarray, labels: Sequence[str], *,
               methods: Sequence[str] | None = None, quantile: float = 0.8, grid_size: int | tuple[int, int] = 100,
               pad: float = 0.1, bounds: tuple[float, float, float, float] | None = None,
               bandwidth: str | float | np.ndarray = "scott", reward_transform: RewardTransform = "minmax",
               normalization: Normalization = "max", method_scale: MethodScale = "self",
               method_threshold: float | None = None) -> Topography:
    """Z_all, H, z_high, every method's D_m, S_m and Share(m) for one prompt (see the module docstring).

    bandwidth: "scott" / "silverman" / a float (scipy's bw_method, from all points and weights), or
    an explicit (2, 2) kernel covariance. methods: the order (and the set) of methods to report;
    a method with no points gets D_m = 0 and share 0.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    lab = np.asarray(list(labels), dtype=object)
    if len(pts) != len(lab):
        raise ValueError(f"{len(pts)} points but {len(lab)} labels")
    r = np.asarray(rewards, dtype=float)
    w = reward_weights(r, reward_transform)
    grid = make_grid(pts, grid_size, pad, bounds)
    if isinstance(bandwidth, np.ndarray):
        cov = np.asarray(bandwidth, dtype=float).reshape(2, 2)
    else:
        cov = kde_covariance(pts, w, bandwidth)
    total = kde_surface(pts, w, grid, cov, unnormalized=True)
    z_all = normalize_surface(total, normalization)
    high, z_high = high_region(z_all, quantile)
    thr = z_high if method_threshold is None else float(method_threshold)
    names = list(methods) if methods is not None else list(dict.fromkeys(lab.tolist()))
    topo = Topography(grid, pts, r, w, lab, cov, z_all, high, z_high, thr)
    for m in names:
        sel = lab == m
        if method_scale == "self":
            d_m = normalize_surface(kde_surface(pts[sel], w[sel], grid, cov), normalization)
        elif method_scale == "shared":
            d_m = normalize_surface(kde_surface(pts[sel], w[sel], grid, cov, unnormalized=True), "max",
                                    scale=float(total.max()))
        else:
            raise ValueError(f"unknown method_scale {method_scale!r}")
        topo.surfaces[m] = d_m
        topo.covered[m] = covered_cells(d_m, high, thr)
        topo.shares[m] = coverage_share(d_m, high, thr)
    return topo


def average_shares(per_prompt: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean share per method over prompts (a method missing from a prompt counts as absent, not 0)."""
    names = list(dict.fromkeys(m for shares in per_prompt for m in shares))
    return {m: float(np.mean([s[m] for s in per_prompt if m in s])) for m in names}
