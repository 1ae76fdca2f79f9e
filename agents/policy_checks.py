"""Shared command lines of ``scripts/`` checks that run one policy over seeded episodes
(``scripts/residual_deviation.py``, ``scripts/onset_check.py``). Kept apart from
:mod:`agents.cli`, which :mod:`dynosim.cli` imports, since these use :mod:`dynosim.cli`."""
from __future__ import annotations

import json

from sim.errors import InputError

from agents.cli import _check_out_file, _pos_int, _seed


def policy_episodes_script(argv, prog: str, doc: str | None, compute, indent: int = 2,
                           extra=None) -> int:
    """``main`` of a ``scripts/`` check that runs one policy over seeded episodes and prints
    a JSON record (``scripts/residual_deviation.py``, ``scripts/onset_check.py``): the
    flags ``--policy`` (required), ``--split``, ``--episodes``, ``--seed`` and ``--out``,
    plus those ``extra(parser)`` adds; ``compute(args) -> dict`` makes the record, printed
    (and written to ``--out``). Exit code: 0, or 2 with one stderr line on bad input."""
    from pathlib import Path

    from dynosim.cli import guarded
    from dynosim.options import Parser, ScriptHelpFormatter

    ap = Parser(prog=prog, description=doc, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--policy", required=True, help="a run dir or model zip; required")
    ap.add_argument("--split", default="train", choices=("train", "eval"),
                    help="training or held-out episodes")
    ap.add_argument("--episodes", type=_pos_int, default=3, help="seeded episodes")
    ap.add_argument("--seed", type=_seed, default=0, help="seed of the first episode")
    if extra is not None:
        extra(ap)
    ap.add_argument("--out", metavar="FILE",
                    help="also write the JSON to this file (default: none, print only)")
    args = ap.parse_args(argv)

    def run() -> int:
        if args.out:
            _check_out_file(args.out)
        import dynosim_gym  # noqa: F401  (registers the envs)
        text = json.dumps(compute(args), indent=indent)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    return guarded(run, {})


def residual_policy_env(spec: str, why: str = ""):
    """``(policy spec, env, config, lowest offset)`` for a residual policy ``spec`` (a run
    dir or model zip) in the env ``dynosim evaluate`` scores it in; InputError on
    ``--policy`` if its action is not ``residual`` (``why`` appended to the message)."""
    from agents.evaluate import make_eval_env, resolve_policy

    pol = resolve_policy(spec)
    env, cfg = make_eval_env(pol, "DynoSim-v0", None, {})
    if cfg.env.action.type != "residual":
        env.close()
        raise InputError(f"{spec} acts with env.action.type {cfg.env.action.type!r}, not "
                         f"residual{why}", field="--policy")
    return pol, env, cfg, int(cfg.env.action.residual_offsets[0])
