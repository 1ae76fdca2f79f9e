"""Issue 11's held-out leaderboard as one picture: SLA attainment against GPU-hours per
episode for every scored policy, with the target region shaded.

    python scripts/plot_heldout_front.py [--bench docs/benchmark] \\
        [--out out/heldout_sla_vs_gpu_hours.png]

The shipped figure: ``--out docs/benchmark/heldout_sla_vs_gpu_hours.png``.

Reads only the result files in ``--bench`` (no simulation): the heuristics'
``heuristic_*.json``, the oracles' ``oracle_*.json`` and each learned recipe's
``learned_NAME.json`` summary (the mean over its training seeds, with the seeds' std as error
bars). The shaded box is the target ``scripts/learned_benchmark.py`` checks (pooled): at least
the tuned planner's attainment with at most 85 % of its GPU-hours. Every point is the same 6
held-out episodes (``dynosim evaluate --episodes 6 --seed 0 --split eval``) except
``oracle:schedule-greedy`` (3 episodes; not drawn); the title names the env and the episodes
from the files (their ``env_id``, ``overrides``, ``episodes_plan`` and per-episode seeds and
workload families; a learned summary's ``evaluation``).

The dashed line is the **hindsight front**: ``oracle:schedule`` (the local search over the
known load) asked for 50, 61.3 (the tuned planner's), 70, 80, 90 and 95 % on every held-out
episode (``--set env.reward.sla_target=T``; :data:`FRONT`), drawn at the pooled attainment
and GPU-hours it reaches. ``--gaps FILE.json`` writes, for every point inside the front's
attainment range, its **excess over hindsight**: its GPU-hours over the front's at the same
pooled attainment (linear between the measured levels), minus 1, and the excess the target
allows (its GPU-hour cap over the front at the tuned planner's attainment). The local search
is a local optimum (its cost is an upper bound on hindsight's), so each excess is a lower
bound on the true one.
"""
from __future__ import annotations

import sys
from pathlib import Path

from dynosim.options import json_field, read_json
from sim.wording import plural

ROOT = Path(__file__).resolve().parents[1]
#: adjustText's forces for the labels, tried in order: the first layout with no label on
#: another, on a marker or on an error bar is kept (``collisions``; checked independently by
#: tests/test_plot_heldout_front.py). A fixed iteration count, not adjustText's default 1 s
#: time limit, so the layout is the same on any machine.
ADJUST_TRIALS = tuple(
    {"expand": expand, "force_text": force, "iter_lim": 300}
    for expand in ((1.5, 2.5), (1.8, 2.8), (1.3, 2.0), (2.0, 3.0))
    for force in ((0.6, 1.2), (0.8, 1.6), (0.4, 0.8), (1.0, 2.0)))
ADJUST = ADJUST_TRIALS[0]

#: learned_NAME.json -> label (the README's round names); a file not listed keeps its NAME
ROUNDS = {
    "ppo": "r3 PPO", "ppo_lagrangian": "r3 Lagrangian", "ppo_lstm": "r3 RecurrentPPO",
    "ppo_bcreg": "r4a", "ppo_select": "r4b", "ppo_r4": "r4c", "ppo_r4d": "r4d",
    "ppo_r5": "r5", "ppo_r6": "r6", "ppo_r7": "r7", "ppo_r7b": "r7b (residual)",
    "ppo_r8": "r8 (residual, dynamics)", "ppo_r9": "r9",
    "ppo_r9b": "r9b", "ppo_r14": "r14", "ppo_r14b": "r14b",
}
#: rounds drawn without error bars (their seeds spread widely;
#: docs/benchmark/learning_rounds.md, rounds 3-4)
EARLY = {"ppo", "ppo_lagrangian", "ppo_lstm", "ppo_bcreg", "ppo_select"}
HEURISTICS = {
    "heuristic_load.json": "load", "heuristic_throughput.json": "throughput",
    "heuristic_load-tuned.json": "load-tuned", "heuristic_static_4.json": "static:4",
    "heuristic_static_6.json": "static:6",
    # the throughput planner's count every step (the residual action at offset 0) with the
    # recipe's scale-down window: round 7b's 60 s, round 8's 300 s; round 9b's with its
    # reversal cooldown and the cold start held; round 14's: 300 s with both
    "residual_base_offset0.json": "base, 60 s (r7b at 0)",
    "residual_base_offset0_w300.json": "base, 300 s (r8 at 0)",
    "residual_base_offset0_w60_c300_hold.json": "base, 60 s + cooldown",
    "residual_base_offset0_w300_c300_hold.json": "base, 300 s + cooldown",
}
ORACLES = {
    "oracle_static.json": "oracle:static",
    "oracle_schedule.json": "oracle:schedule",
    "oracle_schedule_at_planner_sla.json": "oracle:schedule at planner's SLA",
}
#: the hindsight front: result file -> the per-episode target ``oracle:schedule`` was asked
#: for (``env.reward.sla_target``; ``oracle_schedule.json`` is the default 0.95); the files
#: under ``hindsight_front/`` were scored after round 16, as a bound, not to choose anything
FRONT = {
    "hindsight_front/oracle_schedule_sla50.json": 0.50,
    "oracle_schedule_at_planner_sla.json": 0.613,
    "hindsight_front/oracle_schedule_sla70.json": 0.70,
    "hindsight_front/oracle_schedule_sla80.json": 0.80,
    "hindsight_front/oracle_schedule_sla90.json": 0.90,
    "oracle_schedule.json": 0.95,
}


def scored(d: dict, f: Path) -> dict:
    """What a result file's point was scored on, as a record for
    :func:`agents.leaderboard.scored_caption`: its ``env_id``, ``overrides``, ``episodes``,
    ``episodes_plan`` and ``per_episode`` (each episode's ``seed`` and ``setup``), those it
    has, checked; a learned summary's from its ``evaluation`` (episodes, first seed, split)."""
    if "evaluation" in d:                       # scripts/learned_benchmark.py's summary
        n = json_field(d, "evaluation.episodes", int, f)
        first = json_field(d, "evaluation.seed", int, f)
        return {"episodes": n, "episodes_plan": {
            "split": json_field(d, "evaluation.split", str, f),
            "seeds": list(range(first, first + n))}}
    types = {"env_id": (str, type(None)), "overrides": (dict, type(None)), "episodes": int,
             "episodes_plan": dict, "per_episode": list}
    rec = {k: json_field(d, k, t, f) if isinstance(t, type) else d[k]
           for k, t in types.items() if k in d}
    for k in ("env_id", "overrides"):
        if k in rec and not isinstance(rec[k], types[k]):
            json_field(d, k, types[k][0], f)    # the error names the key and its type
    for i, e in enumerate(rec.get("per_episode", [])):
        row = {f"per_episode[{i}]": e}
        json_field(row, f"per_episode[{i}]", dict, f)
        if "seed" in e:
            json_field(row, f"per_episode[{i}].seed", int, f)
        if "setup" in e:
            json_field(row, f"per_episode[{i}].setup", dict, f)
    return rec


def points(bench: Path) -> tuple[list[dict], dict]:
    """``(points, target)``: each point ``{label, kind, gpu, sla, gpu_std, sla_std,
    scored}`` (GPU-hours per episode, SLA attainment in %; ``scored``: what it was scored
    on, see :func:`scored`); ``target`` from the newest learned file."""
    pts: list[dict] = []

    def single(name: str, label: str, kind: str) -> None:
        f = bench / name
        if f.is_file():
            d = read_json(f, dict)
            pts.append({"label": label, "kind": kind,
                        "gpu": json_field(d, "gpu_hours_per_episode", float, f),
                        "sla": 100 * json_field(d, "sla_attainment", float, f),
                        "gpu_std": 0.0, "sla_std": 0.0, "scored": scored(d, f)})

    for name, label in HEURISTICS.items():
        single(name, label, "heuristic")
    for name, label in ORACLES.items():
        single(name, label, "oracle")
    target: dict = {}
    for f in sorted(bench.glob("learned_*.json")):
        name = f.stem[len("learned_"):]
        if name.rsplit("_s", 1)[-1].isdigit():       # a per-seed file
            continue
        d = read_json(f, dict)
        m = {f"{k}.{s}": json_field(d, f"mean_std_over_seeds.{k}.{s}", float, f)
             for k in ("gpu_hours_per_episode", "sla_attainment") for s in ("mean", "std")}
        label = ROUNDS.get(name, name)
        t = json_field(d, "target", dict, f) if d.get("target") else {}
        me = json_field(d, "target.mean_episode", dict, f) if t.get("mean_episode") else {}
        if me and json_field(d, "target.mean_episode.sla_attainment", float, f) < \
                json_field(d, "target.mean_episode.baseline_sla_attainment", float, f):
            label += (f"\n(episode mean {100 * me['sla_attainment']:.0f} % < "
                      f"{100 * me['baseline_sla_attainment']:.0f} %)")
        pts.append({"label": label, "kind": "learned" if name not in EARLY else "early",
                    "gpu": m["gpu_hours_per_episode.mean"],
                    "sla": 100 * m["sla_attainment.mean"],
                    "gpu_std": m["gpu_hours_per_episode.std"],
                    "sla_std": 100 * m["sla_attainment.std"], "scored": scored(d, f)})
        if t:
            json_field(d, "target.gpu_hours_per_episode_max", float, f)
            json_field(d, "target.pooled.baseline_sla_attainment", float, f)
            target = t
    return merge_coincident(pts), target


def hindsight_front(bench: Path) -> list[tuple[float, float]]:
    """The :data:`FRONT` files in ``bench`` that exist, as ``(pooled SLA attainment in %,
    GPU-hours per episode)``, sorted by attainment; InputError if a file's recorded target
    is not the one listed (a file scored with another target must not pass as this level)."""
    out = []
    for name, level in FRONT.items():
        f = bench / name
        if not f.is_file():
            continue
        d = read_json(f, dict)
        asked = d.get("episodes_plan", {}).get("sla_target", 0.95)
        if abs(float(asked) - level) > 1e-9:
            from sim.errors import InputError
            raise InputError(f"scored with sla_target {asked}, listed as {level}",
                             file=str(f), field="episodes_plan.sla_target")
        out.append((100 * json_field(d, "sla_attainment", float, f),
                    json_field(d, "gpu_hours_per_episode", float, f)))
    return sorted(out)


def front_gpu(front: list[tuple[float, float]], sla: float) -> float | None:
    """GPU-hours per episode of the hindsight front at pooled attainment ``sla`` (%), linear
    between its measured points; None outside their range (no extrapolation)."""
    for (s0, g0), (s1, g1) in zip(front, front[1:]):
        if s0 <= sla <= s1:
            return g0 if s1 == s0 else g0 + (sla - s0) / (s1 - s0) * (g1 - g0)
    return None


def gaps(pts: list[dict], target: dict, front: list[tuple[float, float]]) -> dict:
    """``{"front": [[sla %, GPU-h], ...], "target": {...}, "points": [...]}``: each labelled
    point's excess over hindsight (GPU-h / front at its attainment - 1; None outside the
    front's range) and the excess the target allows at the tuned planner's attainment."""
    rows = []
    for p in pts:
        if p["label"] is None or p["kind"] == "oracle":
            continue
        g = front_gpu(front, p["sla"])
        rows.append({"label": p["label"].replace("\n", " "), "kind": p["kind"],
                     "sla_attainment_pct": round(p["sla"], 3),
                     "gpu_hours_per_episode": round(p["gpu"], 4),
                     "front_gpu_hours": None if g is None else round(g, 4),
                     "excess_over_hindsight": None if g is None else round(p["gpu"] / g - 1, 4)})
    tgt = {}
    if target:
        smin = 100 * target["pooled"]["baseline_sla_attainment"]
        g = front_gpu(front, smin)
        tgt = {"sla_attainment_pct": round(smin, 3),
               "gpu_hours_per_episode_max": round(target["gpu_hours_per_episode_max"], 4),
               "front_gpu_hours": None if g is None else round(g, 4),
               "excess_allowed": None if g is None
               else round(target["gpu_hours_per_episode_max"] / g - 1, 4)}
    return {"front": [[round(s, 3), round(g, 4)] for s, g in front], "target": tgt,
            "points": sorted(rows, key=lambda r: (r["excess_over_hindsight"] is None,
                                                  r["excess_over_hindsight"] or 0.0))}


def plot_gaps(rec: dict, out: Path) -> None:
    """Each point's excess over the hindsight front (:func:`gaps`) as a horizontal bar, the
    target's allowance as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in rec["points"] if r["excess_over_hindsight"] is not None][::-1]
    colors = {"heuristic": "C1", "learned": "C0", "early": "#9ecae1"}
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.9))
    y = range(len(rows))
    xs = [100 * r["excess_over_hindsight"] for r in rows]
    ax.barh(y, xs, color=[colors[r["kind"]] for r in rows], edgecolor="k", lw=0.4)
    ax.set_yticks(list(y), [r["label"] for r in rows], fontsize=7)
    for yi, x, r in zip(y, xs, rows):
        ax.text(max(x, 0) + 0.8, yi, f"{x:+.0f} %  ({r['sla_attainment_pct']:.1f} % at "
                f"{r['gpu_hours_per_episode']:.2f} GPU-h)", va="center", fontsize=6.5)
    ax.set_xlim(min(min(xs), 0) - 3, max(xs) + 28)
    ax.axvline(0, color="k", lw=0.8)
    handles = [Patch(color=c, label=k) for k, c in (("heuristic", "C1"),
                                                     ("learned, rounds 4c onwards", "C0"),
                                                     ("learned, rounds 3-4b", "#9ecae1"))]
    allowed = rec["target"].get("excess_allowed")
    if allowed is not None:
        ax.axvline(100 * allowed, color="C2", ls="--", lw=1.2)
        handles.append(plt.Line2D([], [], color="C2", ls="--",
                                  label=f"issue 11 target: at most {100 * allowed:+.1f} % "
                                        f"(≤ {rec['target']['gpu_hours_per_episode_max']:.2f}"
                                        f" GPU-h at {rec['target']['sla_attainment_pct']:.1f} %)"))
    ax.set_xlabel("excess GPU-hours per episode over the hindsight front at the same "
                  "pooled SLA attainment (%)")
    ax.set_title("Held-out families (6 episodes): GPU-hours over the hindsight front\n"
                 "(oracle:schedule asked for 50-95 % on every episode)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    outside = [f"{r['label']} ({r['sla_attainment_pct']:.1f} %)" for r in rec["points"]
               if r["excess_over_hindsight"] is None]
    if outside:       # said, not dropped: outside the front's measured attainment range
        lo, hi = rec["front"][0][0], rec["front"][-1][0]
        ax.annotate(f"Not drawn, outside the front's {lo:.1f}-{hi:.1f} % range: "
                    + ", ".join(outside), xy=(0, 0), xycoords="figure fraction",
                    xytext=(4, 2), textcoords="offset points", fontsize=6.5)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def merge_coincident(pts: list[dict]) -> list[dict]:
    """Points on the same spot (GPU-hours within 0.005, SLA within 0.05 points: a recipe whose
    every seed is a heuristic, e.g. round 9 and its bare base) get one label, ``"A = B"``,
    on the first; the later keeps its marker and has ``label`` None."""
    for i, p in enumerate(pts):
        for q in pts[:i]:
            if q["label"] is not None and abs(q["gpu"] - p["gpu"]) < 0.005 \
                    and abs(q["sla"] - p["sla"]) < 0.05:
                q["label"] = f"{q['label']}\n= {p['label']}"
                p["label"] = None
                break
    return pts


def collisions(fig, ax, texts, points, segments) -> list[str]:
    """Labels (2 px padding) on another label, on a marker (``points``, data coordinates, ~5
    px round) or on an error bar (``segments``, data coordinates): their texts."""
    import itertools

    import numpy as np
    r = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(r).padded(2.0)) for t in texts]
    bad = [a for (a, ba), (_, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    px = ax.transData.transform(points) if points else []
    bad += [a for a, b in boxes for x, y in px if b.padded(3.0).contains(x, y)]
    for seg in segments:
        (x0, y0), (x1, y1) = ax.transData.transform(seg)
        bad += [a for a, b in boxes for f in np.linspace(0.0, 1.0, 60)
                if b.contains(x0 + f * (x1 - x0), y0 + f * (y1 - y0))]
    return bad


def plot(pts: list[dict], target: dict, out: Path,
         front: list[tuple[float, float]] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from adjustText import adjust_text
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.lines import Line2D
    from matplotlib.transforms import Bbox

    style = {"heuristic": ("s", "C1"), "oracle": ("D", "C2"), "learned": ("o", "C0"),
             "early": ("o", "#9ecae1")}
    fig, ax = plt.subplots(figsize=(11, 7))
    texts, xs, ys = [], [], []
    xs_all = [p["gpu"] for p in pts]
    ys_all = [p["sla"] for p in pts]
    bar_lines = []      # each error bar's LineCollection: adjustText keeps labels off them
    for p in pts:
        marker, color = style[p["kind"]]
        bars = p["kind"] == "learned"
        eb = ax.errorbar(p["gpu"], p["sla"], xerr=(p["gpu_std"] or None) if bars else None,
                    yerr=(p["sla_std"] or None) if bars else None,
                    fmt=marker, color=color, ms=6, mec="k", mew=0.5, ecolor=color,
                    elinewidth=0.8, capsize=2, zorder=3)
        bar_lines += [seg for c in eb.lines[2] for seg in c.get_segments()]
        if p["label"] is not None:
            texts.append(ax.text(p["gpu"], p["sla"], p["label"], fontsize=7, zorder=4))
            xs.append(p["gpu"])
            ys.append(p["sla"])
    handles = [Line2D([], [], marker=m, ls="", color=c, mec="k", mew=0.5, label=lab)
               for lab, (m, c) in (("heuristic (Dynamo's planners, static N)",
                                    style["heuristic"]),
                                   ("hindsight oracle", style["oracle"]),
                                   ("learned recipe, rounds 4c onwards (mean ± std over seeds)",
                                    style["learned"]),
                                   ("learned recipe, rounds 3-4b (mean over seeds)",
                                    style["early"]))]
    if front:
        ax.plot([g for _, g in front], [s for s, _ in front], ls="--", color="C2", lw=1.0,
                marker="D", ms=3, zorder=2)
        handles[1] = Line2D([], [], ls="--", color="C2", marker="D", mec="k", mew=0.5,
                            label="hindsight oracle (dashed: oracle:schedule at 50-95 %)")
    if target:
        gmax = target["gpu_hours_per_episode_max"]
        smin = 100 * target["pooled"]["baseline_sla_attainment"]
        lo_x = min(p["gpu"] - p["gpu_std"] for p in pts) - 0.3
        ax.add_patch(Rectangle((lo_x, smin), gmax - lo_x, 101 - smin, color="C2", alpha=0.12,
                               zorder=1, lw=0))
        handles.append(Patch(color="C2", alpha=0.25,
                             label=f"issue 11 target: SLA ≥ {smin:.1f} % (the tuned planner's),"
                                   f" GPU-h ≤ {gmax:.2f}"))
    ax.set_xlabel("GPU-hours per episode (lower is better)")
    ax.set_ylabel("SLA attainment, pooled over requests (%)")
    from agents.leaderboard import scored_caption
    ax.set_title(scored_caption([p["scored"] for p in pts if "scored" in p]), fontsize=10,
                 wrap=True)
    ax.grid(alpha=0.3)
    ax.set_ylim(top=100)
    ax.margins(x=0.06, y=0.06)
    legend = ax.legend(handles=handles, fontsize=7, loc="lower right")
    fig.tight_layout()
    # labels keep off the points, the error bars (a label on r4d's bar hid it) and the
    # legend: adjustText takes obstacles as Bboxes in data coordinates
    to_data = ax.transData.inverted()
    obstacles = [Bbox(seg) for seg in bar_lines]
    for x, y in ax.transData.transform(list(zip(xs, ys))):      # each marker, ~6 px round
        obstacles.append(Bbox([[x - 6, y - 6], [x + 6, y + 6]]).transformed(to_data))
    obstacles.append(legend.get_window_extent(fig.canvas.get_renderer()).transformed(to_data))
    start = [t.get_position() for t in texts]
    for trial in ADJUST_TRIALS:
        for t, xy in zip(texts, start):
            t.set_position(xy)
        for a in [c for c in ax.patches if c.__class__.__name__ == "FancyArrowPatch"]:
            a.remove()
        adjust_text(texts, x=xs, y=ys, objects=obstacles, ax=ax, max_move=None,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6}, **trial)
        if not collisions(fig, ax, texts, list(zip(xs_all, ys_all)), bar_lines):
            break
    else:
        print("plot_heldout_front.py: note: no layout tried keeps every label clear",
              file=sys.stderr)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="plot_heldout_front.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--bench", default=str(ROOT / "docs" / "benchmark"),
                    help="directory of the result files read")
    from dynosim.plots import plot_file
    ap.add_argument("--out", type=plot_file, default="out/heldout_sla_vs_gpu_hours.png",
                    help="PNG written (the shipped figure: --out "
                         "docs/benchmark/heldout_sla_vs_gpu_hours.png)")
    ap.add_argument("--gaps", default=None, metavar="FILE.json",
                    help="also write each point's excess over the hindsight front (the "
                         "shipped file: docs/benchmark/hindsight_front/gaps.json)")
    ap.add_argument("--gaps-png", type=plot_file, default=None, metavar="FILE.png",
                    help="with --gaps: the excess as a bar chart (the shipped file: "
                         "docs/benchmark/hindsight_front/excess_over_hindsight.png)")
    from dynosim.cli import run_script
    return run_script(ap, argv, _run)


def _run(args) -> int:
    pts, target = points(Path(args.bench))
    if not pts:
        from sim.errors import InputError
        raise InputError(f"no result files in {args.bench}", field="--bench")
    front = hindsight_front(Path(args.bench))
    plot(pts, target, Path(args.out), front)
    print(f"wrote {args.out} ({plural(len(pts), 'policy', many='policies')})")
    if args.gaps_png and not args.gaps:
        from sim.errors import InputError
        raise InputError("--gaps-png needs --gaps FILE.json (the excess it draws)",
                         field="--gaps-png")
    if args.gaps:
        import json
        rec = gaps(pts, target, front)
        Path(args.gaps).parent.mkdir(parents=True, exist_ok=True)
        Path(args.gaps).write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
        for r in rec["points"]:
            if r["excess_over_hindsight"] is None:
                print(f"  {r['label']}: {r['sla_attainment_pct']:.1f} %, outside the "
                      f"front's range: no excess")
            else:
                print(f"  {r['label']}: {r['sla_attainment_pct']:.1f} % at "
                      f"{r['gpu_hours_per_episode']:.2f} GPU-h, "
                      f"{100 * r['excess_over_hindsight']:+.0f} % over hindsight")
        print(f"wrote {args.gaps}")
        if args.gaps_png:
            plot_gaps(rec, Path(args.gaps_png))
            print(f"wrote {args.gaps_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
