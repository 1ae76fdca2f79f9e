"""A deterministic linear residual autoscaler (issue 11, rounds 15-16: direct policy search).

For ``env.action.type: residual`` with ``residual_offsets = [lo, hi]`` the policy maps the
env's observation vector ``x`` (shape ``(n,)``, the run's ``env.observation.features`` in
order) to an offset to the base (Dynamo's throughput planner's count)::

    offset = clip(floor(w . x + b + 0.5), lo, hi)        # round half up, then clip

and acts ``offset - lo`` (the env's ``Discrete(hi - lo + 1)`` index). With feature
standardisation (round 16) the policy first maps ``x`` to ``x' = (x - mu) / sigma`` (``mu``,
``sigma``: shape ``(n,)``, per feature, measured on the bare base's rollouts of the search's
training episodes by ``scripts/es_search.py --standardise``) and applies ``w, b`` to ``x'``. A non-finite ``w . x
+ b`` (only if the observation held NaN; the env's features are clipped finite) is offset
0 clipped to ``[lo, hi]``, never an out-of-range action. ``w = 0, b = 0`` is the bare base.
There is no action noise: the parameters are what a search perturbs (evolution strategies,
Salimans et al. 2017; CMA-ES, Hansen 2016; ``scripts/es_search.py``).

A run directory holds ``policy.json`` (this module's :func:`save_policy` format, below) and
``run.json`` (the run record, as ``dynosim train`` writes it, with ``"framework": "es"``):
``dynosim evaluate --policy RUN_DIR`` scores it (``agents.evaluate.resolve_policy``).

``policy.json``: ``{"format": "dynosim-linear-residual/1", "features": [n names],
"weights": [n floats], "bias": float, "residual_offsets": [lo, hi]}`` (round 15), or
format ``"dynosim-linear-residual/2"`` with two more keys, ``"feature_mean": [n floats]``
and ``"feature_std": [n floats > 0]`` (standardised features, round 16). A /1 file loads
and scores exactly as before; a /1 file carrying the /2 keys, or a /2 file without them,
is refused rather than read half. A missing, corrupt or inconsistent file is a one-line
:class:`sim.errors.InputError` naming the file and field (exit 2 on the CLI).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.errors import InputError

FORMAT = "dynosim-linear-residual/1"          # raw features (round 15)
FORMAT_STD = "dynosim-linear-residual/2"      # standardised features (round 16)
POLICY_FILE = "policy.json"


def offset_of(weights: np.ndarray, bias: float, x: np.ndarray, lo: int, hi: int) -> int:
    """The offset for observation ``x`` (shape ``(n,)``): ``clip(floor(w.x + b + 0.5), lo,
    hi)``; a non-finite ``w.x + b`` gives ``clip(0, lo, hi)``."""
    with np.errstate(over="ignore", invalid="ignore"):     # inf/NaN handled below
        v = float(np.dot(weights, np.asarray(x, dtype=np.float64))) + float(bias)
    if not math.isfinite(v):
        return int(min(max(0, lo), hi))
    return int(min(max(math.floor(v + 0.5), lo), hi))


class LinearResidualPolicy:
    """SB3-style ``predict`` over :func:`offset_of` (module doc). ``observation_space`` /
    ``action_space`` are what ``dynosim evaluate`` checks against the env's."""

    def __init__(self, features: Sequence[str], weights: Sequence[float], bias: float,
                 residual_offsets: Sequence[int],
                 feature_mean: Sequence[float] | None = None,
                 feature_std: Sequence[float] | None = None) -> None:
        from gymnasium import spaces
        self.features = list(features)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.lo, self.hi = int(residual_offsets[0]), int(residual_offsets[1])
        n = len(self.features)
        if (feature_mean is None) != (feature_std is None):
            raise ValueError("feature_mean and feature_std go together")
        self.feature_mean = (None if feature_mean is None
                             else np.asarray(feature_mean, dtype=np.float64))
        self.feature_std = (None if feature_std is None
                            else np.asarray(feature_std, dtype=np.float64))
        if self.feature_mean is not None and not (
                self.feature_mean.shape == self.feature_std.shape == (n,)
                and np.all(self.feature_std > 0)):
            raise ValueError(f"feature_mean and feature_std must have {n} entries, std > 0")
        self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.action_space = spaces.Discrete(self.hi - self.lo + 1)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - mu) / sigma`` if the policy carries them, else ``x`` (as float64)."""
        x = np.asarray(x, dtype=np.float64)
        if self.feature_mean is None:
            return x
        with np.errstate(over="ignore", invalid="ignore"):
            return (x - self.feature_mean) / self.feature_std

    def offset(self, x: np.ndarray) -> int:
        return offset_of(self.weights, self.bias, self.standardise(x), self.lo, self.hi)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        x = np.asarray(observation, dtype=np.float64)
        if x.ndim == 2:                                   # a batch of one (vec env)
            return np.array([self.offset(r) - self.lo for r in x], dtype=np.int64), state
        return np.int64(self.offset(x) - self.lo), state

    def to_dict(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "format": FORMAT if self.feature_mean is None else FORMAT_STD,
            "features": self.features, "weights": [float(w) for w in self.weights],
            "bias": self.bias, "residual_offsets": [self.lo, self.hi]}
        if self.feature_mean is not None:
            rec["feature_mean"] = [float(v) for v in self.feature_mean]
            rec["feature_std"] = [float(v) for v in self.feature_std]
        return rec


def save_policy(policy: LinearResidualPolicy, run_dir: str | Path) -> Path:
    """Write ``run_dir/policy.json`` (floats as Python's shortest round-trip repr)."""
    path = Path(run_dir) / POLICY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(policy.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_policy(run_dir: str | Path) -> LinearResidualPolicy:
    """Read ``run_dir/policy.json``; InputError (file, field) if it is missing or bad."""
    path = Path(run_dir) / POLICY_FILE
    if not path.is_file():
        raise InputError(f"no {POLICY_FILE} in the es run directory {run_dir}",
                         file=str(path), field="--policy")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path), field="--policy") from None

    def bad(field: str, why: str) -> InputError:
        return InputError(why, file=str(path), field=field)

    if not isinstance(rec, dict):
        raise bad("--policy", "not a JSON object")
    fmt = rec.get("format")
    if fmt not in (FORMAT, FORMAT_STD):
        raise bad("format", f"expected {FORMAT!r} or {FORMAT_STD!r}, got {fmt!r}")
    feats = rec.get("features")
    if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
        raise bad("features", "must be a non-empty list of feature names")
    w = rec.get("weights")
    if (not isinstance(w, list) or not all(_finite_number(v) for v in w)):
        raise bad("weights", "must be a list of finite numbers")
    if len(w) != len(feats):
        raise bad("weights", f"has {len(w)} entries for {len(feats)} features")
    b = rec.get("bias")
    if not _finite_number(b):
        raise bad("bias", f"must be a finite number, got {b!r}")
    offs = rec.get("residual_offsets")
    if (not isinstance(offs, list) or len(offs) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in offs)
            or offs[0] > 0 or offs[1] < 0):
        raise bad("residual_offsets", f"must be [lo, hi] integers with lo <= 0 <= hi, got {offs!r}")
    stats = {}
    for key in ("feature_mean", "feature_std"):
        if fmt == FORMAT:
            if key in rec:
                raise bad(key, f"format {FORMAT!r} has no {key} (standardised features are "
                               f"format {FORMAT_STD!r})")
            continue
        v = rec.get(key)
        if not isinstance(v, list) or not all(_finite_number(e) for e in v):
            raise bad(key, f"format {FORMAT_STD!r} needs a list of finite numbers")
        if len(v) != len(feats):
            raise bad(key, f"has {len(v)} entries for {len(feats)} features")
        if key == "feature_std" and not all(float(e) > 0 for e in v):
            raise bad(key, "every entry must be > 0")
        stats[key] = v
    return LinearResidualPolicy(feats, w, b, offs, **stats)


def _finite_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))
