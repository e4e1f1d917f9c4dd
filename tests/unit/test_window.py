"""The window a dry run predicts, from its parts (window.predict); the dry run's own measurements are
tested against a real PostgreSQL in test_import_safety.py."""

from __future__ import annotations

import pytest

from _syn2mas.migration import window


def test_the_prediction_is_the_import_verify_and_the_services_given():
    predicted = window.predict(41.26, 13.71, 20)
    assert predicted == {"predicted_window_seconds": 75.0,
                         "predicted_window": {"import_seconds": 41.26, "verify_seconds": 13.71, "service_seconds": 20.0,
                                              "cross_check_wait_seconds": 0.0}}


def test_the_dry_runs_cross_check_wait_is_given_beside_the_parts_and_not_counted():
    predicted = window.predict(41.26, 13.71, 20, cross_check_wait=9.5)
    assert predicted["predicted_window_seconds"] == 75.0
    assert predicted["predicted_window"]["cross_check_wait_seconds"] == 9.5


def test_without_service_seconds_the_benchmark_default_is_added():
    predicted = window.predict(10.0, 2.0, None)
    assert predicted["predicted_window"]["service_seconds"] == window.DEFAULT_SERVICE_SECONDS
    assert predicted["predicted_window_seconds"] == round(12.0 + window.DEFAULT_SERVICE_SECONDS, 1)


def test_zero_service_seconds_is_taken_as_given():
    assert window.predict(10.0, 2.0, 0)["predicted_window_seconds"] == 12.0


def test_negative_service_seconds_are_refused_by_name():
    with pytest.raises(ValueError, match="service seconds must not be negative"):
        window.predict(10.0, 2.0, -1)
