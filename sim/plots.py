"""Latency CDF figures for a finished run (TTFT, ITL, E2E) as one image file.

Uses ``matplotlib.figure.Figure`` directly (Agg canvas), never ``pyplot``: no GUI backend, no
global figure state, safe in headless CI and inside other programs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import STATUS_COMPLETED
from .simulator import RunResult

_QS = np.linspace(0.0, 1.0, 401)


def _cdf(ax, values: np.ndarray, label: str, **style) -> None:
    v = np.sort(values[np.isfinite(values)])
    if len(v):
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, **style)


def _finish(ax, title: str, values: np.ndarray) -> None:
    ax.set_title(title)
    ax.set_xlabel("ms")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    v = values[np.isfinite(values) & (values > 0)]
    if len(v) and v.max() / v.min() > 5:      # long tails: log x
        ax.set_xscale("log")
    for q, ls in ((0.5, ":"), (0.9, "--"), (0.99, "-.")):
        ax.axhline(q, color="grey", lw=0.6, ls=ls)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)


def plot_latency_cdfs(result: RunResult, path: str | Path, title: str | None = None) -> Path:
    """Write TTFT, ITL and E2E CDFs of the completed requests to ``path`` (.png/.svg/.pdf).

    ITL is shown two ways: over individual token gaps (Dynamo's ITL percentiles, read from
    the run's gap sketch) and as each request's mean gap (what one user sees).
    """
    from matplotlib.figure import Figure

    c = result.metrics.columns()
    done = c["status"] == STATUS_COMPLETED
    arrival, first, last = (c[k][done] for k in ("arrival_time_ms", "first_token_ms",
                                                  "last_token_ms"))
    out_len = c["output_length"][done]
    ttft, e2e = first - arrival, last - arrival
    multi = out_len > 1
    itl_req = (last - first)[multi] / (out_len[multi] - 1)
    sketch = result.metrics.itl
    gaps = np.array([sketch.quantile(q) for q in _QS]) if sketch.n else np.zeros(0)

    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_ttft, ax_itl, ax_e2e = fig.subplots(1, 3)
    _cdf(ax_ttft, ttft, f"{len(ttft):,} requests")
    _finish(ax_ttft, "TTFT", ttft)
    if len(gaps):
        ax_itl.plot(gaps, _QS, label=f"token gaps ({sketch.n:,})")
    _cdf(ax_itl, itl_req, "per-request mean", ls="--")
    _finish(ax_itl, "ITL", np.concatenate([gaps, itl_req]))
    _cdf(ax_e2e, e2e, f"{len(e2e):,} requests")
    _finish(ax_e2e, "End-to-end latency", e2e)
    ax_ttft.set_ylabel("fraction of requests (tokens for gaps)")
    t = result.summary["totals"]
    fig.suptitle(title or f"{t['completed_requests']:,} completed, {t['rejected_requests']:,} "
                 f"rejected, {t['in_flight_requests']:,} in flight")
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
