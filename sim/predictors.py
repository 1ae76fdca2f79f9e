"""Load predictors for the planners (Dynamo ``planner/core/load_predictor``-like).

Each predictor is fed one observation per planner interval (``add(value)``) and forecasts
the next interval's value (``predict()``). Dynamo forecasts ``num_req``, ``isl`` and ``osl``
with one predictor each; so do our planners.

* ``Constant``      -- next = last observation (Dynamo's ``constant``; also the warm-up rule).
* ``MovingAverage`` -- mean of the last ``window`` observations.
* ``KalmanLLT``     -- local-linear-trend Kalman filter (state = level, trend), Dynamo's
  defaults ``q_level=1.0, q_trend=0.1, r=10.0, min_points=5``; forecast = level + trend.
* ``Arima``         -- a small auto-ARIMA(p, d, 0) of our own (no statsmodels/pmdarima):
  for d in {0, 1} (levels or first differences) and p in 1..``max_p`` it fits
  ``y_t = c + sum_i phi_i y_{t-i}`` by ordinary least squares on the last ``window`` points
  (all candidates on the same effective sample) and keeps the lowest AIC; the one-step
  forecast is undifferenced back to a level. Optional ``log1p`` transform (Dynamo's
  ``load_predictor_log1p``). Forecasts are clipped at 0 (loads are non-negative).

Like Dynamo's ``BasePredictor.add_data_point``, zeros before the first non-zero value are
skipped (the idle period before traffic starts). Before ``min_points`` observations every
predictor falls back to the constant rule (and predicts 0 before any observation);
``Arima`` also needs ``max_p + 4`` points to fit. Dynamo's ``prophet`` is not provided.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from .errors import InputError


class Predictor:
    min_points: int = 1

    def __init__(self) -> None:
        self.history: list[float] = []

    def add(self, value: float) -> None:
        v = float(value)
        if not math.isfinite(v):
            raise InputError(f"observation must be finite, got {value!r}", field="value")
        if v == 0 and not self.history:
            return       # Dynamo skips the leading idle period (zeros before any load)
        self.history.append(v)
        self._update(v)

    def _update(self, v: float) -> None:
        pass

    def predict(self) -> float:
        if not self.history:
            return 0.0
        if len(self.history) < self.min_points:
            return self.history[-1]
        return self._predict()

    def _predict(self) -> float:
        return self.history[-1]


class Constant(Predictor):
    """next = last value."""


class MovingAverage(Predictor):
    def __init__(self, window: int = 5) -> None:
        super().__init__()
        if not isinstance(window, int) or window < 1:
            raise InputError(f"must be an integer >= 1, got {window!r}", field="window")
        self.window = window
        self._buf: deque[float] = deque(maxlen=window)

    def _update(self, v: float) -> None:
        self._buf.append(v)

    def _predict(self) -> float:
        return sum(self._buf) / len(self._buf)


class KalmanLLT(Predictor):
    """Local linear trend: level_t = level + trend + w1, trend_t = trend + w2, y = level + v."""

    def __init__(self, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0,
                 min_points: int = 5) -> None:
        super().__init__()
        for name, val in (("q_level", q_level), ("q_trend", q_trend)):
            if not (val >= 0 and math.isfinite(val)):
                raise InputError(f"must be >= 0, got {val!r}", field=name)
        if not (r > 0 and math.isfinite(r)):
            raise InputError(f"must be > 0, got {r!r}", field="r")
        if not isinstance(min_points, int) or min_points < 1:
            raise InputError(f"must be an integer >= 1, got {min_points!r}", field="min_points")
        self.min_points = min_points
        self.F = np.array([[1.0, 1.0], [0.0, 1.0]])
        self.Q = np.diag([q_level, q_trend])
        self.r = r
        self.x: np.ndarray | None = None
        self.P = np.eye(2) * 1e6

    def _update(self, v: float) -> None:
        if self.x is None:
            self.x = np.array([v, 0.0])
            self.P = np.diag([self.r, 1e6])   # level known to ~r, trend unknown
            return
        # predict
        x = self.F @ self.x
        P = self.F @ self.P @ self.F.T + self.Q
        # update with y = level + noise
        s = P[0, 0] + self.r
        k = P[:, 0] / s
        x = x + k * (v - x[0])
        P = P - np.outer(k, P[0, :])
        self.x, self.P = x, P

    def _predict(self) -> float:
        assert self.x is not None
        return max(0.0, float(self.x[0] + self.x[1]))


class Arima(Predictor):
    """Small auto-ARIMA(p, d, 0) by least squares with AIC selection (see module doc)."""

    def __init__(self, max_p: int = 2, window: int = 100, min_points: int = 5,
                 log1p: bool = False) -> None:
        super().__init__()
        if not isinstance(max_p, int) or max_p < 1:
            raise InputError(f"must be an integer >= 1, got {max_p!r}", field="max_p")
        if not isinstance(window, int) or window < 4:
            raise InputError(f"must be an integer >= 4, got {window!r}", field="window")
        if not isinstance(min_points, int) or min_points < 1:
            raise InputError(f"must be an integer >= 1, got {min_points!r}", field="min_points")
        self.max_p, self.window, self.min_points, self.log1p = max_p, window, min_points, log1p
        self.order: tuple[int, int, int] | None = None   # chosen (p, d, 0) at the last predict

    def _predict(self) -> float:
        y = np.asarray(self.history[-self.window:], dtype=float)
        if self.log1p:
            y = np.log1p(np.maximum(y, 0.0))
        best: tuple[float, float, tuple[int, int, int]] | None = None
        n_common = len(y) - 1 - self.max_p    # same effective sample for every candidate
        if n_common < 3:
            return self.history[-1]
        for d in (0, 1):
            z = np.diff(y) if d else y[1:]    # drop one level so both d share a sample length
            for p in range(1, self.max_p + 1):
                target = z[self.max_p:]
                cols = [np.ones(len(target))]
                for i in range(1, p + 1):
                    cols.append(z[self.max_p - i:len(z) - i])
                X = np.column_stack(cols)
                coef, *_ = np.linalg.lstsq(X, target, rcond=None)
                resid = target - X @ coef
                sse = float(resid @ resid)
                n = len(target)
                aic = n * math.log(max(sse / n, 1e-12)) + 2 * (p + 1)
                nxt = coef[0] + sum(coef[i] * z[-i] for i in range(1, p + 1))
                fc = (y[-1] + nxt) if d else nxt
                if best is None or aic < best[0] - 1e-9:
                    best = (aic, float(fc), (p, d, 0))
        assert best is not None
        self.order = best[2]
        fc = best[1]
        if self.log1p:
            fc = math.expm1(min(fc, 700.0))
        if not math.isfinite(fc):
            return self.history[-1]
        return max(0.0, fc)


PREDICTORS = {"constant": Constant, "moving_average": MovingAverage, "kalman": KalmanLLT,
              "arima": Arima}


def make_predictor(name: str, **kw) -> Predictor:
    """``constant`` | ``moving_average`` | ``kalman`` | ``arima``, with constructor kwargs."""
    cls = PREDICTORS.get(name)
    if cls is None:
        raise InputError(f"unknown predictor {name!r} ({' | '.join(PREDICTORS)})",
                         field="load_predictor")
    try:
        return cls(**kw)
    except TypeError as exc:
        raise InputError(f"bad arguments for predictor {name!r}: {exc}",
                         field="load_predictor") from None
