"""The import's full reliability suite (`make reliability`, SYN2MAS_RELIABILITY=full) and the test run's share of it.

The test run runs one case of each fault; the full suite runs every step, side, signal and kill point. Cases
outside the test run are not generated there (rather than generated and skipped), so that a default run
reports no skip that was certain before it started.
"""

from __future__ import annotations

import os

FULL = os.environ.get("SYN2MAS_RELIABILITY") == "full"


def _param_id(case) -> str:
    return case.id if hasattr(case, "id") and hasattr(case, "values") else str(case)


def cases(every: list, in_the_test_run) -> list:
    """`every` case under `make reliability`; only those named in `in_the_test_run` otherwise (by value, or by
    id for pytest.param cases). A name in `in_the_test_run` that matches no case is an error, not a silent loss."""
    names = {_param_id(case) for case in every}
    unknown = set(in_the_test_run) - names
    if unknown:
        raise ValueError(f"not among the cases: {sorted(unknown)}")
    return list(every) if FULL else [case for case in every if _param_id(case) in in_the_test_run]


def full_suite_only(test):
    """A test run under `make reliability` only: not collected otherwise (pytest reads `__test__`)."""
    test.__test__ = FULL
    return test
