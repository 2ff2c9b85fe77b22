"""Figures 3 and 4 of the paper as PNGs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from drift_exp.analysis.topography import Topography

COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    return {m: COLORS[i % len(COLORS)] for i, m in enumerate(methods)}


def plot_shares(avg: Mapping[str, float], path: Path, title: str = "High-reward region coverage",
                err: Mapping[str, float] | None = None, n_prompts: int | None = None) -> Path:
    """Figure 3: one bar per method, its Share averaged over prompts (in %); err: error bars (e.g. the
    standard error over prompts), same units as avg."""
    plt = _plt()
    methods = list(avg)
    colors = method_colors(methods)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(methods), 3.6))
    values = [100 * avg[m] for m in methods]
    errors = [100 * err[m] for m in methods] if err else None
    bars = ax.bar(methods, values, color=[colors[m] for m in methods], yerr=errors, capsize=4)
    tops = [v + (e if errors else 0.0) for v, e in zip(values, errors or [0.0] * len(values), strict=True)]
    for bar, v, top in zip(bars, values, tops, strict=True):
        ax.annotate(f"{v:.1f}%", (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom",
                    xytext=(0, 2), textcoords="offset points", fontsize=9)
    ax.set_ylabel("share of high-reward region (%)" + (" ± s.e." if errors else ""))
    ax.set_ylim(0, max([*tops, 1.0]) * 1.2)
    ax.set_title(title + (f" ({n_prompts} prompts)" if n_prompts else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_topography(topo: Topography, path: Path, title: str = "") -> Path:
    """Figure 4: left, the UMAP scatter of all responses (by method, sized by reward weight); right,
    Z_all as terrain with the boundary of H dashed and each method's covered cells S_m shaded."""
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    methods = list(topo.surfaces)
    colors = method_colors(methods)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    for m in methods:
        sel = topo.labels == m
        left.scatter(topo.points[sel, 0], topo.points[sel, 1], s=12 + 48 * topo.weights[sel], c=colors[m],
                     alpha=0.7, label=m, edgecolors="none")
    left.set_title("UMAP of all responses (size: reward)", fontsize=10)
    left.legend(fontsize=8, loc="best")
    xs, ys = topo.grid.xs, topo.grid.ys
    terrain = right.contourf(xs, ys, topo.z_all, levels=20, cmap="Greys", alpha=0.8)
    fig.colorbar(terrain, ax=right, label="Z_all (reward-weighted density)")
    if topo.high.any() and not topo.high.all():
        right.contour(xs, ys, topo.high.astype(float), levels=[0.5], colors="black", linestyles="--", linewidths=1.2)
    handles = [Line2D([], [], color="black", linestyle="--", label="high-reward region H")]
    for m in methods:
        mask = topo.covered[m].astype(float)
        if mask.any():
            right.contourf(xs, ys, mask, levels=[0.5, 1.5], colors=[colors[m]], alpha=0.3)
            right.contour(xs, ys, mask, levels=[0.5], colors=[colors[m]], linewidths=1.0)
        handles.append(Patch(facecolor=colors[m], alpha=0.4, label=f"{m}: {100 * topo.shares[m]:.1f}% of H"))
    right.legend(handles=handles, fontsize=8, loc="best")
    right.set_xlim(xs[0], xs[-1])
    right.set_ylim(ys[0], ys[-1])
    right.set_title(f"Semantic reward topography (z_high = {topo.z_high:.3f})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def shares_std(per_prompt: Sequence[Mapping[str, float]]) -> dict[str, float]:
    names = list(dict.fromkeys(m for s in per_prompt for m in s))
    return {m: float(np.std([s[m] for s in per_prompt if m in s])) for m in names}
