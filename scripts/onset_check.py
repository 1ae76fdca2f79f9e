"""Scale-up onsets and held scale-ups of a residual policy on seeded episodes (issue 11,
round 14b's training-split check, docs/benchmark/round14b/rules.md rule 2).

    python scripts/onset_check.py --policy RUN_DIR [--split train --episodes 3 --seed 0] \\
        [--window-s 300] [--out FILE.json]

Runs the policy (deterministic, as ``dynosim evaluate``) in its own evaluation env (the run
record's action: window, cooldown, cold start, initial hold) and reports per episode:

* ``step0``: the offset asked at the first step (workers), the count at reset and the
  count provisioned by that step (``info["target_workers"]``);
* ``held_scale_ups``: decision steps at which the ask (``info["requested_workers"]``,
  clamped to the env's range) exceeds the count before the step and the provisioned count
  is below the ask (the reversal cooldown holding a scale-up), all of them and those
  decided in the first ``--window-s`` seconds;
* ``queued_at_onset``: the requests queued at each scale-up onset, by
  ``scripts/plot_learned.py``'s definition (a rise of the provisioned count with none in the
  60 s before; q = the queue the policy saw at the step before), and their median;
* ``flaps``, the episode's family, SLA attainment and GPU-hours.

Exit 2 with one line on bad input (a policy without a residual action included).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def episode(env, policy, split: str, seed: int, offset_lo: int, window_s: float) -> dict:
    """One deterministic episode's report (module doc)."""
    from plot_learned import onsets, scale_events
    u = env.unwrapped
    obs, _ = env.reset(seed=seed, options={"split": split})
    lo, hi = u.cfg.env.min_endpoint, u.max_workers
    initial = int(sum(u.sim.counts()[:2]))
    trace = {"t_s": [], "active_workers": [], "starting_workers": [], "queued_requests": []}
    held, step0, done, k = [], None, False, 0
    while not done:
        before = int(sum(u.sim.counts()[:2]))
        t_dec = k * u.cfg.env.interval_s
        a, _ = policy.predict(obs, deterministic=True)
        a = int(np.asarray(a).reshape(-1)[0])
        obs, _, term, trunc, info = env.step(a)
        want = min(max(int(info["requested_workers"]), lo), hi)
        if k == 0:
            step0 = {"offset": a + offset_lo, "base": int(info["base_workers"]),
                     "initial": initial, "provisioned": int(info["target_workers"])}
        if want > before and int(info["target_workers"]) < want:
            held.append({"t_s": t_dec, "requested": want, "provisioned":
                         int(info["target_workers"]), "queued": int(u._last.queued)})
        trace["t_s"].append(float(info["t_s"]))
        trace["active_workers"].append(float(info["active_workers"]))
        trace["starting_workers"].append(float(info["starting_workers"]))
        trace["queued_requests"].append(float(u._last.queued))
        done = term or trunc
        k += 1
    ups, _ = scale_events(trace)
    q = [int(trace["queued_requests"][max(i - 1, 0)]) for i in onsets(trace, ups)]
    s = info["episode_summary"]
    return {"seed": seed, "scenario": u.episode.get("scenario"), "step0": step0,
            "held_scale_ups": len(held),
            "held_scale_ups_first_window": sum(h["t_s"] < window_s for h in held),
            "held": held, "queued_at_onset": q,
            "queued_at_onset_median": statistics.median(q) if q else None,
            "flaps": int(s["flaps"]),
            "sla_attainment": s["requests_met"] / max(s["requests_decided"], 1),
            "gpu_hours": float(s["gpu_hours"])}


def check(spec: str, split: str = "train", episodes: int = 3, seed: int = 0,
          window_s: float = 300.0) -> dict:
    from agents.policy_checks import residual_policy_env

    pol, env, cfg, lo = residual_policy_env(spec)
    learned = pol.load(env)
    rows = [episode(env, learned, split, s, lo, window_s) for s in range(seed, seed + episodes)]
    env.close()
    meds = [r["queued_at_onset_median"] for r in rows if r["queued_at_onset_median"] is not None]
    return {"policy": spec, "split": split, "seeds": list(range(seed, seed + episodes)),
            "action": cfg.to_dict()["env"]["action"], "window_s": window_s,
            "held_scale_ups_first_window": sum(r["held_scale_ups_first_window"] for r in rows),
            "median_of_episode_medians": statistics.median(meds) if meds else None,
            "per_episode": rows}


def main(argv=None) -> int:
    """Exit code: 0, or 2 with one stderr line on bad input (the ``dynosim`` CLI's path)."""
    from agents.policy_checks import policy_episodes_script

    def window(ap):
        from sim.schema import TIME_S_POS, arg_type
        ap.add_argument("--window-s", type=arg_type(TIME_S_POS, float), default=300.0,
                        help="the first window (s) whose held scale-ups are counted apart")
    return policy_episodes_script(
        argv, "onset_check.py", __doc__,
        lambda a: check(a.policy, a.split, a.episodes, a.seed, a.window_s), indent=1,
        extra=window)


if __name__ == "__main__":
    raise SystemExit(main())
