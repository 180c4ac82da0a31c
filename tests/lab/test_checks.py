"""Option checks before a run (the command-line cases are in tests/test_errors.py)."""

from __future__ import annotations

import math

import pytest

from rstscope.lab import checks, scenarios
from rstscope.status import InputError


@pytest.mark.parametrize(
    ("text", "bits"),
    [("20mbit", 20e6), ("20Mbit", 20e6), ("1gbit", 1e9), ("100kbps", 800e3), ("1000", 8000), ("1.5mibit", 1.5 * 2**20)],
)
def test_parse_rate(text, bits):
    assert math.isclose(checks.parse_rate(text), bits)


@pytest.mark.parametrize("text", ["0mbit", "-5mbit", "fast", "20parsecs", "", "1e30gbit", "nanmbit"])
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError):
        checks.parse_rate(text)


@pytest.mark.parametrize(("text", "seconds"), [("200ms", 0.2), ("1s", 1.0), ("50msec", 0.05), ("100", 1e-4)])
def test_parse_time(text, seconds):
    assert math.isclose(checks.parse_time(text), seconds)


@pytest.mark.parametrize("text", ["forever", "-3ms", "ms", "3 hours"])
def test_parse_time_refuses(text):
    with pytest.raises(ValueError):
        checks.parse_time(text)


@pytest.mark.parametrize("name", list(scenarios.PRESETS))
def test_every_preset_passes_the_checks(name):
    checks.check_lab_options(scenarios.options_for(name, port=0))


def test_every_checked_field_is_an_option():
    assert set(checks.LAB_CHECKS) <= scenarios.OPTION_NAMES


def test_bool_is_not_a_number():
    with pytest.raises(InputError, match="--loops True: expected a number"):
        checks.check_lab_options(scenarios.options_for("clean", loops=True))


def test_capture_options():
    checks.check_capture_options(scenarios.CaptureOptions(iface="lo", duration=1.0))
    with pytest.raises(InputError, match="--iface nosuch0: no such interface"):
        checks.check_capture_options(scenarios.CaptureOptions(iface="nosuch0", duration=1.0))
