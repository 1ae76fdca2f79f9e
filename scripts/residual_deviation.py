"""How far a residual policy departs from its bare base on seeded episodes (issue 11, round
14's "learned, not its base" test, docs/benchmark/round14/rules.md rule 2).

    python scripts/residual_deviation.py --policy RUN_DIR [--split train --episodes 3 \\
        --seed 0] [--out FILE.json]

Runs the policy (deterministic, as ``dynosim evaluate``) and the bare base (offset 0 at
every step, :class:`agents.heuristics.OffsetPolicy`) in the policy's own evaluation env
(the run record's action: window, cooldown, cold start), on the same episodes, and reports
per episode and pooled: the share of decision steps at which the policy asks for a non-zero
offset and its mean offset (workers); the share of steps at which the provisioned count
(``info["target_workers"]``, workers) differs from the bare base's at the same step; and
each run's requests met / decided and GPU-hours. ``differs`` is true if on some episode the
requests met or the GPU-hours differ. Exit 2 with one line on bad input (a policy without a
residual action included).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _episode(env, policy, split: str, seed: int, offset_lo: int) -> dict:
    """One deterministic episode: per-step offsets asked for and counts provisioned, and the
    episode's requests met / decided and GPU-hours."""
    obs, _ = env.reset(seed=seed, options={"split": split})
    offsets, provisioned = [], []
    done = False
    while not done:
        a, _ = policy.predict(obs, deterministic=True)
        a = int(np.asarray(a).reshape(-1)[0])
        obs, _, term, trunc, info = env.step(a)
        offsets.append(a + offset_lo)
        provisioned.append(int(info["target_workers"]))
        done = term or trunc
    s = info["episode_summary"]
    return {"seed": seed, "offsets": offsets, "provisioned": provisioned,
            "requests_met": int(s["requests_met"]), "requests_decided": int(s["requests_decided"]),
            "gpu_hours": float(s["gpu_hours"])}


def deviation(spec: str, split: str = "train", episodes: int = 3, seed: int = 0) -> dict:
    """The report (module doc) for policy ``spec`` (a run dir or model) on ``episodes``
    episodes of ``split`` from ``seed``."""
    from agents.policy_checks import residual_policy_env
    from agents.heuristics import OffsetPolicy

    pol, env, cfg, lo = residual_policy_env(spec, ": it has no base to compare with")
    learned, base = pol.load(env), OffsetPolicy(env, 0, field="--policy")
    rows = []
    for s in range(seed, seed + episodes):
        p, b = _episode(env, learned, split, s, lo), _episode(env, base, split, s, lo)
        po, bo = np.asarray(p["provisioned"]), np.asarray(b["provisioned"])
        n = min(len(po), len(bo))
        rows.append({"seed": s, "steps": len(p["offsets"]),
                     "nonzero_offset_steps": int(np.count_nonzero(p["offsets"])),
                     "mean_offset": float(np.mean(p["offsets"])),
                     "provisioned_differs_steps": int(np.count_nonzero(po[:n] != bo[:n])),
                     "policy": {k: p[k] for k in ("requests_met", "requests_decided",
                                                  "gpu_hours")},
                     "bare_base": {k: b[k] for k in ("requests_met", "requests_decided",
                                                     "gpu_hours")},
                     "offset_counts": {str(o): int(c) for o, c in
                                       zip(*np.unique(p["offsets"], return_counts=True))}})
    env.close()
    steps = sum(r["steps"] for r in rows)
    return {"policy": spec, "split": split, "seeds": list(range(seed, seed + episodes)),
            "action": cfg.to_dict()["env"]["action"],
            "nonzero_offset_share": sum(r["nonzero_offset_steps"] for r in rows) / steps,
            "mean_offset": float(np.mean([r["mean_offset"] for r in rows])),
            "provisioned_differs_share":
                sum(r["provisioned_differs_steps"] for r in rows) / steps,
            "differs": any(r["policy"]["requests_met"] != r["bare_base"]["requests_met"] or
                           r["policy"]["gpu_hours"] != r["bare_base"]["gpu_hours"]
                           for r in rows),
            "per_episode": rows}


def main(argv=None) -> int:
    """Exit code: 0, or 2 with one stderr line on bad input (the ``dynosim`` CLI's path)."""
    from agents.policy_checks import policy_episodes_script
    return policy_episodes_script(
        argv, "residual_deviation.py", __doc__,
        lambda a: deviation(a.policy, a.split, a.episodes, a.seed))


if __name__ == "__main__":
    sys.exit(main())
