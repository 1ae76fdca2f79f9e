"""``dynosim config schema``: every input (YAML field, flag, env keyword, trace field) with its
type, default, allowed range and unit, read from the ranges declared in :mod:`sim.schema`
and the config dataclasses, so the table can never disagree with the validator.
"""
from __future__ import annotations

import argparse
import json
import types
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Iterator, Union, get_args, get_origin, get_type_hints

from sim.schema import (FLAG_RANGES, PASS_MS, PLANNER_FIELDS, TRACE_FIELDS, WORKLOAD_FIELDS,
                        field_range)

# -- the table (dynosim config schema) -----------------------------------------------------

def _type_name(typ: Any) -> str:
    args = get_args(typ) if get_origin(typ) in (Union, types.UnionType) else (typ,)
    names = [a.__name__ if a is not type(None) else "null" for a in args]
    return " | ".join(names)


def _rows_of(cls: type, prefix: str, flag_of: dict[str, str]) -> Iterator[dict[str, Any]]:
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name in ("source", "where", "raw"):
            continue
        dotted = f"{prefix}.{f.name}"
        default = f.default if f.default is not MISSING else None
        if f.default is MISSING and f.default_factory is not MISSING:
            if is_dataclass(hints[f.name]):                                # nested section
                yield from _rows_of(hints[f.name], dotted, flag_of)
                continue
            default = f.default_factory()                                  # e.g. env.planner
        rng = field_range(f)
        choices = f.metadata.get("choices")
        yield {"field": dotted, "type": _type_name(hints[f.name]), "default": default,
               "range": rng.text() if rng else (
                   ("each " if get_origin(hints[f.name]) is list else "") + "one of "
                   + "|".join(choices) if choices else ""),
               "unit": rng.unit if rng else "", "flag": flag_of.get(dotted, ""),
               "why": "; ".join(x for x in (rng.rule, rng.why) if x) if rng else ""}


def rows() -> dict[str, list[dict[str, Any]]]:
    """Every documented input, grouped: YAML/CLI fields, env fields, workload keys, trace
    fields, planner flags."""
    from sim.config import SECTIONS, DisaggSection

    from .options import FLAG_OF
    out: dict[str, list[dict[str, Any]]] = {"config": []}
    for name, cls in SECTIONS.items():
        out["config"] += list(_rows_of(cls, name, FLAG_OF))
    out["config"] += list(_rows_of(DisaggSection, "disagg", FLAG_OF))     # disaggregated pools
    for r in out["config"]:     # --kv-bytes-per-token sets both sizes (the run's one KV size)
        if r["field"] == "disagg.kv_bytes_per_token":
            r["flag"] = FLAG_OF["engine.kv_cache_bytes_per_token"]
    _show_null(out["config"])
    out["config"].append({"field": "timing.model = fixed:P,D", "type": "float,float",
                          "default": None, "range": PASS_MS.text(), "unit": PASS_MS.unit,
                          "flag": "--timing", "why": PASS_MS.why})
    try:
        from dynosim_gym.config import EnvSection
    except ImportError:          # sim installed without the gym package
        EnvSection = None
    if EnvSection is not None:
        out["env"] = list(_rows_of(EnvSection, "env", {}))
        _note_env_defaults(out["env"])
        _show_null(out["env"])
        from dynosim_gym.scenarios import TRACE_LOAD
        trace = ("trace families draw their peak as this times their load scale "
                 "(scenarios.TRACE_LOAD: " + ", ".join(f"{k} x {v:g}" for k, v in
                                                      TRACE_LOAD.items()) + ")")
        from dynosim_gym.episodes import MAX_EPISODE_REQUESTS
        cap = (f"an episode may generate at most {MAX_EPISODE_REQUESTS:,} requests "
               "(rate x duration x the family's requests per unit of rate)")
        rule = {"env.rate_min_rps": trace, "env.rate_max_rps": f"{trace}; {cap}",
                "env.action.residual_offsets": "[lo, hi] with lo <= 0 <= hi"}
        for r in out["env"]:
            if r["field"] in rule:
                r["note"] = rule[r["field"]]
                r["why"] = f"{r['why']}; {r['note']}" if r["why"] else r["note"]
    wflag = {"trace_block_size": "--trace-block-size",
             "arrival_speedup_ratio": "--arrival-speedup-ratio"}
    wdefaults = _workload_defaults()
    out["workload"] = [{"field": f"workload.{k}", "type": wdefaults[k][0],
                        "default": wdefaults[k][1],
                        "range": r.text(), "unit": r.unit, "flag": wflag.get(k, ""),
                        "why": r.why} for k, r in WORKLOAD_FIELDS.items()]
    out["trace"] = [{"field": f"{fmt}:{k}", "type": "", "default": None,
                     "range": r.text() if (r.lo is not None or r.hi is not None) else "",
                     "unit": r.unit, "flag": "", "why": f"{note}; {r.why}"}
                    for fmt, spec in TRACE_FIELDS.items() for k, (r, note) in spec.items()]
    from sim.planner import PlannerConfig
    planner_types = get_type_hints(PlannerConfig)
    base = PlannerConfig()
    out["planner"] = [{"field": f"planner.{k}", "type": _type_name(planner_types[k]),
                       "default": "null" if getattr(base, k) is None else getattr(base, k),
                       "range": r.text(), "unit": r.unit, "flag": FLAG_OF.get(f"planner.{k}", ""),
                       "why": r.why} for k, r in PLANNER_FIELDS.items()]
    config_default = {r["field"]: r["default"] for r in out["config"]}
    out["planner"] += [{"field": flag, "type": typ.__name__,
                        "default": (f"{config_default[FLAG_FIELD[flag]]} "
                                    f"({FLAG_FIELD[flag]})" if flag in FLAG_FIELD else
                                    "none (no GPU table)"),
                        "range": r.text(), "unit": r.unit, "flag": flag, "why": r.why}
                       for flag, (r, typ) in FLAG_RANGES.items()]
    return out


def _show_null(field_rows: list[dict[str, Any]]) -> None:
    """A field whose default is None shows it as ``null``, as the workload and planner rows
    do (a blank default is left for inputs that have none: trace fields, ``fixed:P,D``)."""
    for r in field_rows:
        if r["default"] is None:
            r["default"] = "null"


#: FLAG_RANGES flags that are a second spelling of a config field (their default is its).
FLAG_FIELD = {"--initial-workers": "cluster.num_workers",
              "--startup-time": "cluster.startup_time_s"}


def _workload_defaults() -> dict[str, tuple[str, str]]:
    """:data:`sim.schema.WORKLOAD_FIELDS` key -> (type, default), read from the signatures
    of the factories that take the key (``synthetic``, ``load_mooncake``, ``load_azure``;
    the arrival processes for ``arrival.*``, the length distributions for ``isl|osl.*``).
    A default that differs by workload kind names each kind's; a parameter without one is
    ``required`` (by the kinds, processes or distributions that take it)."""
    import importlib
    import inspect
    syn = importlib.import_module("sim.workloads.synthetic")
    traces = importlib.import_module("sim.workloads.traces")
    top = {"synthetic": syn.synthetic, "mooncake": traces.load_mooncake,
           "azure": traces.load_azure}
    groups = {"arrival": (syn.poisson, syn.gamma, syn.constant, syn.closed_loop, syn.ramp,
                          syn.diurnal, syn.nhpp),
              "isl|osl": (syn.fixed, syn.uniform, syn.lognormal)}

    def type_of(params: list[inspect.Parameter]) -> str:     # 'int | None' -> int | null
        names = [t.strip().strip("'") for p in params for t in str(p.annotation).split("|")]
        return " | ".join(dict.fromkeys("null" if t == "None" else t for t in names))

    def show(p: inspect.Parameter) -> str:
        if p.default is inspect.Parameter.empty:
            return "required"
        return "null" if p.default is None else str(p.default)

    out = {}
    for key in WORKLOAD_FIELDS:
        head, _, rest = key.rpartition(".")
        if head:                                   # arrival.rate / mean_rate, isl|osl.sigma
            by_value: dict[str, list[str]] = {}
            params = []
            for name in (n.strip() for n in rest.split("/")):
                for fn in groups[head]:
                    p = inspect.signature(fn).parameters.get(name)
                    if p is not None:
                        by_value.setdefault(show(p), []).append(name)
                        params.append(p)
                        break
            default = (next(iter(by_value)) if len(by_value) == 1 else
                       "; ".join(f"{', '.join(n)}: {v}" for v, n in by_value.items()))
            out[key] = (type_of(params), default)
            continue
        found = {kind: inspect.signature(fn).parameters[key] for kind, fn in top.items()
                 if key in inspect.signature(fn).parameters}
        shown = {kind: show(p) for kind, p in found.items()}
        default = (next(iter(shown.values())) if len(set(shown.values())) == 1 else
                   "; ".join(f"{kind}: {v}" for kind, v in shown.items()))
        out[key] = (type_of(list(found.values())), default)
    return out


#: Env fields whose ``null`` default is computed when the env is built: the rule (the env
#: class docstrings' wording), and how to read the value ``DynoSim-v0`` uses from the built
#: env (``None``: nothing single to show).
COMPUTED: dict[str, tuple[str, Any]] = {
    "env.initial_workers": ("cluster.num_workers",
                            lambda u: u.cfg.env.initial_workers
                            or u.cfg.sim.cluster.num_workers),
    "env.eval_scenarios": ("env.scenarios",
                           lambda u: u.cfg.env.eval_scenarios or u.cfg.env.scenarios),
    "env.startup_min_s": ("cluster.startup_time_s (no draw)", None),
    "env.startup_max_s": ("cluster.startup_time_s (no draw)", None),
    "env.planner_interval_s": ("env.interval_s (load), planner."
                               "throughput_adjustment_interval_seconds (throughput)", None),
    "env.observation.rate_scale_rps": ("env.rate_max_rps", lambda u: u.obs_builder.rate_scale),
    "env.reward.gpu_weight": ("0.5 / (env.interval_s x env.max_gpu_budget)",
                              lambda u: u.w_gpu),
    "env.reward.request_scale": ("env.rate_max_rps x env.interval_s",
                                 lambda u: u.request_scale),
}


def _note_env_defaults(env_rows: list[dict[str, Any]]) -> None:
    """The env section's defaults are the dataclass's; ``DynoSim-v0`` loads its default
    scenario (``envs_configs/autoscale_default.yaml``) on top: where that differs, the row
    says ``(DynoSim-v0: value)`` so the table shows what ``gym.make`` actually uses. A
    ``null`` that the env computes (:data:`COMPUTED`) says ``computed: RULE`` and the value
    read from a built ``DynoSim-v0``."""
    import gymnasium as gym

    import dynosim_gym  # noqa: F401  (registers DynoSim-v0)
    built = gym.make("DynoSim-v0")
    u = built.unwrapped
    env = u.cfg.env
    for r in env_rows:
        value: Any = env
        for part in r["field"].split(".")[1:]:
            value = getattr(value, part, None)
        rule, of = COMPUTED.get(r["field"], (None, None))
        if rule is not None and r["default"] is None:
            if value is not None:              # the scenario sets it
                shown = f" (DynoSim-v0 sets {value})"
            elif of is not None:
                got = of(u)
                shown = f" (DynoSim-v0: {got:.6g})" if isinstance(got, float) else \
                    f" (DynoSim-v0: {got})"
            else:
                shown = ""
            r["default"] = f"computed: {rule}{shown}"
        elif value != r["default"]:
            r["default"] = f"{r['default']} (DynoSim-v0: {value})"
    built.close()


TITLES = {"config": "Run config (YAML sections; flags of `dynosim simulate`; env keywords "
                    "as dotted keys)",
          "env": "Environment (`env:` section; `gym.make` keywords: bare field names; "
                 "defaults of the section, and DynoSim-v0's default scenario where it differs)",
          "workload": "Workload block (`workload:`)",
          "trace": "Trace fields (per line)",
          "planner": "Planner section (`planner:`; flags of `dynosim simulate`) and other flags"}


def render(fmt: str = "text") -> str:
    """The schema as a text table (``fmt="text"``), Markdown or JSON."""
    groups = rows()
    if fmt == "json":
        return json.dumps(groups, indent=1, default=str)
    lines: list[str] = []
    for key, items in groups.items():
        if fmt == "markdown":
            lines += [f"### {TITLES[key]}", "", "| field | type | default | allowed | unit | "
                      "flag | why |", "|---|---|---|---|---|---|---|"]
            for r in items:          # a '|' inside a cell (int | null, isl|osl) is escaped
                lines.append("| " + " | ".join(
                    str(x).replace("|", "\\|") if x not in (None, "") else "" for x in
                    (f"`{r['field']}`", r["type"], r["default"], r["range"], r["unit"],
                     r["flag"], r["why"])) + " |")
        else:
            lines.append(TITLES[key])
            for r in items:
                d = "" if r["default"] is None else f" = {r['default']}"
                flag = f"  {r['flag']}" if r["flag"] and r["flag"] != r["field"] else ""
                lines.append(f"  {r['field']:<44} {r['range'] or r['type']:<28} "
                             f"{r['unit']:<9}{d}{flag}"
                             + (f"; {r['note']}" if r.get("note") else ""))
        lines.append("")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """``dynosim config schema``: print the allowed ranges of every input."""
    c = sub.add_parser("config", help="inspect the config schema",
                       description="Config tools.")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    s = csub.add_parser("schema", help="allowed range of every numeric input",
                        description="Every input (YAML field, flag, env keyword, trace field) "
                        "with its type, default and allowed range, from sim.schema.")
    s.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="a text table, Markdown tables or JSON")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "config_command", None) != "schema":
        print("usage: dynosim config schema [--format text|markdown|json]")
        return 2
    print(render(args.format))
    return 0
