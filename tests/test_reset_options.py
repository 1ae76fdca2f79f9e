"""``env.reset(options=...)`` meets the bad-input standard: every option value is checked
(type, finiteness, the range of the ``env`` field it stands for) and an option that does not
apply to the config's workload is refused, each with a one-line ``ValueError`` naming
``options.KEY``, before any episode is built."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynosim_gym.autoscaling_env import DynoSimEnv
from dynosim_gym.config import load_env_config
from dynosim_gym.episodes import OPTION_RULES, EpisodeFactory
from dynosim_gym.routing_env import DynoSimRoutingEnv
from sim.errors import InputError

FAMILIES = EpisodeFactory(load_env_config("autoscale_default"))     # workload families
LEGACY = EpisodeFactory(load_env_config("autoscale_legacy"))        # diurnal, bursty, ramp
TRACE = EpisodeFactory(load_env_config("autoscale_mooncake"))       # trace windows


def refused(factory: EpisodeFactory, options: dict, key: str) -> str:
    with pytest.raises(InputError) as info:
        factory.describe_options(options)
    text = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in text
    assert f"field 'options.{key}'" in text, text
    return text


def _outside(key: str):
    rng = OPTION_RULES[key][0]
    lo = st.floats(max_value=rng.lo, exclude_max=not rng.lo_open, allow_nan=False)
    hi = st.floats(min_value=rng.hi, exclude_min=True, allow_nan=False)
    return st.one_of(lo, hi)


NOT_NUMBERS = st.one_of(st.just(float("nan")), st.just(math.inf), st.just(-math.inf),
                        st.text(max_size=5), st.booleans(), st.none(),
                        st.lists(st.integers(), max_size=2), st.just(np.nan))


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(["rate_rps", "swing"]), data=st.data())
def test_bad_numbers_are_refused_naming_the_option(key: str, data) -> None:
    value = data.draw(st.one_of(NOT_NUMBERS, _outside(key)))
    refused(FAMILIES, {key: value}, key)


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(NOT_NUMBERS, st.floats(max_value=0, exclude_max=True)))
def test_bad_window_starts_are_refused(value) -> None:
    refused(TRACE, {"window_start_s": value}, "window_start_s")


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(min_value=1e-9, max_value=500),   # (higher: over MAX_EPISODE_REQUESTS)
       swing=st.one_of(st.floats(min_value=1, max_value=1e6), st.integers(1, 10**6)))
def test_values_in_range_are_kept_as_floats(rate: float, swing) -> None:
    opts = FAMILIES.describe_options({"rate_rps": rate, "swing": swing})
    assert opts == {"rate_rps": float(rate), "swing": float(swing)}
    assert type(opts["swing"]) is float


@pytest.mark.parametrize("factory,options,key,words", [
    (FAMILIES, {"window_start_s": 10}, "window_start_s", "trace workloads only"),
    (FAMILIES, {"window_start_s": "x"}, "window_start_s", "trace workloads only"),
    (LEGACY, {"swing": 5}, "swing", "workload families"),
    (FAMILIES, {"scenario": "steady", "swing": 5}, "swing", "not to steady"),
    (TRACE, {"scenario": "steady"}, "scenario", "synthetic workloads only"),
    (TRACE, {"rate_rps": 2.0}, "rate_rps", "synthetic workloads only"),
    (TRACE, {"swing": 5}, "swing", "synthetic workloads only"),
    (FAMILIES, {"scenario": "nope"}, "scenario", "unknown scenario"),
    (FAMILIES, {"scenario": 3}, "scenario", "expected a string"),
    (FAMILIES, {"split": ["eval"]}, "split", "expected a string"),
    (FAMILIES, {"split": "test"}, "split", "unknown split"),
    (FAMILIES, {"rate": 1.0}, "rate", "unknown reset option"),
])
def test_options_that_do_not_apply_are_refused(factory, options, key, words) -> None:
    assert words in refused(factory, options, key)


def test_trace_window_routing_family_takes_no_rate() -> None:
    routing = EpisodeFactory(load_env_config("routing_families"))
    assert "own rate" in refused(routing, {"scenario": "mooncake_window", "rate_rps": 2.0},
                                 "rate_rps")


@pytest.mark.parametrize("options,key,words", [
    ({"rate_rps": float("nan")}, "rate_rps", "finite"),
    ({"rate_rps": "abc"}, "rate_rps", "expected a number"),
    ({"rate_rps": 1e9}, "rate_rps", "env.rate_max_rps"),
    ({"swing": 0}, "swing", "must be >= 1"),
    ({"swing": -1}, "swing", "must be >= 1"),
])
def test_the_env_api_refuses_them(options, key, words) -> None:
    """The values a new user tried, through ``reset`` (numpy, division, memory errors and a
    negative rate curve before)."""
    env = DynoSimEnv(config="autoscale_default")
    with pytest.raises(ValueError, match=rf"field 'options\.{key}': .*{words}"):
        env.reset(seed=0, options=options)
    env.reset(seed=0, options={"scenario": "rate_steps", "rate_rps": np.float32(2.0),
                               "swing": 5})
    assert env.episode["swing"] == 5.0 and min(env.episode["envelope"]["rates_rps"]) > 0


def test_routing_env_refuses_a_window_on_synthetic() -> None:
    env = DynoSimRoutingEnv(config="routing_default")
    with pytest.raises(ValueError, match=r"field 'options\.window_start_s': applies to trace"):
        env.reset(seed=0, options={"window_start_s": 10})
