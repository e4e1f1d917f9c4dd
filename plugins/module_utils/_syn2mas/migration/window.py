# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The downtime window a dry run predicts: Synapse stopped -> Synapse healthy and delegating.

The window holds the import, verify after it, and the runbook's service work around them (Synapse's
stop, MAS's stop and start until healthy, Synapse's delegation written, Synapse's start until healthy,
and the runbook's tasks in between). The dry run measures the first two and takes the third as given:

- the import: the dry run's own duration, less what only a dry run does. It does the real import's work
  (every stage, the rebuild, Synapse's fingerprint read during the rebuild, the digests of the rows
  written), and rolls back; it also recomputes the rows from Synapse to prove the path (verify's pass over
  Synapse, overlapping the rebuild), and the part of that pass the rebuild and the digests did not cover
  is not in the prediction;
- verify: what verify reads after the commit, measured by the dry run inside its transaction: MAS's
  side (the digests of the imported rows, per bucket of keys: the very query the import ran to digest the
  rows it wrote, which verify repeats when Synapse is unchanged) and the fingerprint of Synapse's tables
  (verify compares it with the import's);
- the services: not measurable before the stop without stopping something, so an estimate the operator
  gives (the runbook's `syn2mas_window_service_seconds`), taken from a rehearsal's report (the fleet report's
  `window_service_seconds`: its window minus what its check run measured). Without one, DEFAULT_SERVICE_SECONDS,
  an estimate (see there).

In the runbook the fleet report predicts the window from the check run instead (fleet_report.predict_window): the
check run's own window, which holds the dry-run import and every task of the window as check mode runs them, plus
verify's reads and the service seconds from here; only the real stops and starts are left to the estimate.

Plain Python; the import calls it at the end of a dry run.
"""

from __future__ import annotations

# The service part of the window when the operator gives none: an estimate, not a measurement of the
# operator's hosts. README.md's measured window of test_runbook_e2e (5 users, so nearly all of it services and
# tasks: 30.0 s on a 2-core machine shared with two other test runs) puts it near 25 s; the runbook benchmark
# (bench/README.md) measured 89 to 161 s for it on the same machine at a load average of 5 to 14. A
# rehearsal's figure is what makes the prediction hold.
DEFAULT_SERVICE_SECONDS = 25.0


def predict(import_seconds: float, verify_seconds: float, service_seconds: float | None,
            cross_check_wait: float = 0.0) -> dict:
    """The predicted window (seconds, one decimal) and its parts (three decimals). `cross_check_wait` is not
    one of them: the dry run's wait for its cross-check against Synapse, which the real run does not make; it is
    given beside them for a prediction from a check run's window, which holds it (fleet_report.predict_window)."""
    service = DEFAULT_SERVICE_SECONDS if service_seconds is None else float(service_seconds)
    if service < 0:
        raise ValueError(f"the window's service seconds must not be negative (got {service})")
    parts = {"import_seconds": round(import_seconds, 3), "verify_seconds": round(verify_seconds, 3),
             "service_seconds": round(service, 3), "cross_check_wait_seconds": round(cross_check_wait, 3)}
    return {"predicted_window_seconds": round(import_seconds + verify_seconds + service, 1),
            "predicted_window": parts}


def predict_from_dry_run(record, dry_run_seconds: float, service_seconds: float | None) -> dict:
    """The prediction at the end of a dry run of `dry_run_seconds`: `record` is what it read for verify
    (the seconds of the digests of the rows written and of Synapse's fingerprint, and how long the run
    waited for its recomputation of Synapse's rows, which the real run does not do)."""
    import_seconds = max(dry_run_seconds - record.waited, 0.0)
    return predict(import_seconds, record.written_seconds + record.fingerprint_seconds, service_seconds,
                   cross_check_wait=min(record.waited, dry_run_seconds))
