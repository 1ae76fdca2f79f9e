"""Latency CDF figures for a finished run (TTFT, ITL, E2E) as one image file.

Uses ``matplotlib.figure.Figure`` directly (Agg canvas), never ``pyplot``: no GUI backend, no
global figure state, safe in headless CI and inside other programs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.metrics import STATUS_COMPLETED
from sim.simulator import RunResult
from sim.wording import plural

_QS = np.linspace(0.0, 1.0, 401)

#: adjustText's iteration budget for label layouts (the leaderboard's, the sweeps' and
#: ``scripts/plot_learned.py``'s figures): a fixed count, not adjustText's default 1 s time
#: limit, under which the layout depended on the machine's speed and load (the shipped
#: leaderboard and Pareto figures never reach zero overlap error, so they stopped on the
#: clock: 394-657 iterations on this 2-core machine under load). Same inputs, same PNG bytes.
ADJUST_TEXT_ITERATIONS = 500


def adjust_labels(texts: list, **kwargs) -> None:
    """``adjustText.adjust_text(texts, **kwargs)`` stopped after
    :data:`ADJUST_TEXT_ITERATIONS` iterations (or at zero overlap), never by time."""
    from adjustText import adjust_text
    adjust_text(texts, iter_lim=ADJUST_TEXT_ITERATIONS, time_lim=None, **kwargs)


def _cdf(ax, values: np.ndarray, label: str, **style) -> None:
    v = np.sort(values[np.isfinite(values)])
    if len(v):
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, **style)


def _finish(ax, title: str, values: np.ndarray, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(f"{title} (ms{', log scale' if _log_x(values) else ''})")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    if _log_x(values):                     # long tails: log x
        ax.set_xscale("log")
        v = values[np.isfinite(values) & (values > 0)]
        if v.max() / v.min() < 100:        # under two decades: 1-2-5 ticks, plain numbers
            from matplotlib import ticker  # (matplotlib's own labels every minor tick
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # there,
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(        # and they overlap)
                lambda x, _: f"{x:,.0f}" if x >= 1 else f"{x:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    # percentile guides, labelled on a right-hand axis (clear of the curves)
    guides = (0.5, 0.9, 0.99)
    for q, ls in zip(guides, (":", "--", "-.")):
        ax.axhline(q, color="grey", lw=0.6, ls=ls)
    right = ax.secondary_yaxis("right")
    right.set_yticks(guides, labels=[f"p{round(q * 100)}" for q in guides])
    right.tick_params(labelsize=7, colors="0.35", length=2)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)


def _log_x(values: np.ndarray) -> bool:
    v = values[np.isfinite(values) & (values > 0)]
    return bool(len(v) and v.max() / v.min() > 5)


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
    tokens = out_len > 0                   # output_length 0: no TTFT/E2E sample (Dynamo)
    ttft, e2e = (first - arrival)[tokens], (last - arrival)[tokens]
    multi = out_len > 1
    itl_req = (last - first)[multi] / (out_len[multi] - 1)
    sketch = result.metrics.itl
    gaps = np.array([sketch.quantile(q) for q in _QS]) if sketch.n else np.zeros(0)

    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_ttft, ax_itl, ax_e2e = fig.subplots(1, 3)
    _cdf(ax_ttft, ttft, plural(len(ttft), "request", fmt=","))
    _finish(ax_ttft, "TTFT", ttft, "fraction of requests with TTFT ≤ x")
    if len(gaps):
        ax_itl.plot(gaps, _QS, label=f"token gaps ({sketch.n:,})")
    _cdf(ax_itl, itl_req, "per-request mean", ls="--")
    _finish(ax_itl, "ITL", np.concatenate([gaps, itl_req]),
            "fraction of token gaps (or requests) ≤ x")
    _cdf(ax_e2e, e2e, plural(len(e2e), "request", fmt=","))
    _finish(ax_e2e, "End-to-end latency", e2e, "fraction of requests with E2E ≤ x")
    t = result.summary["totals"]
    fig.suptitle(title or f"{t['completed_requests']:,} completed, {t['rejected_requests']:,} "
                 f"rejected, {t['in_flight_requests']:,} in flight")
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out


def plot_file(text: str) -> Path:
    """argparse type of a plot's ``--out``: a file name whose suffix matplotlib can write
    (``.png``, ``.svg``, ``.pdf``, ...), checked before any episode runs."""
    import argparse

    from matplotlib.backend_bases import FigureCanvasBase
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(text).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unsupported plot format {suffix or '(none)'!r}; expected a file name "
            f"ending in one of {', '.join('.' + f for f in sorted(formats))}")
    return Path(text)
