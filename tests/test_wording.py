"""Count wording (s8-fixE): "1 env runners", "1 interleaved repeats" and the like said a
plural of one. Every user-facing count goes through :func:`sim.wording.plural`; each test
here fails on the old wording."""
from __future__ import annotations

from hypothesis import given, strategies as st

from conftest import load_script
from sim.wording import plural


@given(st.integers(min_value=-10**7, max_value=10**7), st.sampled_from(
    ["env runner", "interleaved repeat", "episode", "GPU"]))
def test_plural_is_singular_for_one_only(n, noun) -> None:
    text = plural(n, noun)
    assert text == (f"{n} {noun}" if n == 1 else f"{n} {noun}s")


def test_plural_options() -> None:
    assert plural(1, "policy", many="policies") == "1 policy"
    assert plural(2, "policy", many="policies") == "2 policies"
    assert plural(12031, "request", fmt=",") == "12,031 requests"
    assert plural(1, "request", fmt=",") == "1 request"
    from dynosim.options import plural as reexported        # the commands' import
    assert reexported is plural


def test_env_speed_report_says_one_repeat_and_one_episode() -> None:
    from dynosim_gym.speed import markdown
    text = markdown([], repeats=1, episodes=1)
    assert "1 interleaved repeat x 1 episode each" in text, text
    assert "3 interleaved repeats x 2 episodes each" in markdown([], repeats=3, episodes=2)


def test_peer_side_by_side_footer_says_one_repeat() -> None:
    mod = load_script("bench/peer_side_by_side")
    lat = {m: {s: 1.0 for s, _ in mod.STATS} for m, _ in mod.METRICS}
    run = {"replay_wall_s": 1.0, "process_wall_s": 1.5, "peak_rss_mb": 70.0,
           "load_avg_1min": 1.0}
    results = {"da": {"ours": [{**run, "summary": {"latency_ms": lat, "totals": {
        "completed_requests": 1}}}], "peer": [{**run, "metrics": {"latency_ms": lat, "totals": {
            "completed_requests": 1}}}]}}
    text = mod.render(results)
    assert "\n1 interleaved repeat per configuration" in text, text


def test_routing_families_footer_says_one_episode() -> None:
    markdown = load_script("bench/routing_families").markdown
    assert "\n1 episode per family and router" in markdown([], 1, 0, "eval")


def test_simulate_title_and_planner_line_say_one(tmp_path, capsys) -> None:
    """``dynosim simulate`` on a one-request trace with a one-GPU planner budget."""
    from conftest import run_cli
    trace = tmp_path / "one.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 64, "output_length": 4, '
                     '"hash_ids": [1]}\n')
    rc, out, err = run_cli(capsys, "simulate", "--trace", str(trace), "--num-workers", "1",
                           "--planner", "load", "--max-gpu-budget", "1")
    assert rc == 0, err
    assert "1 request," in out or "1 request " in out, out
    assert "1 worker at start" in out and "(budget 1 GPU)" in out, out
    assert "max 1 replica " in out and "goodput       1 request within SLA" in out, out
    assert "1 requests" not in out and "1 replicas" not in out, out
