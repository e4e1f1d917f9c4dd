# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The downtime window a dry run predicts: Synapse stopped -> Synapse healthy and delegating.

The window holds the import, verify after it, and the runbook's service work around them (Synapse's
stop, MAS's stop and start until healthy, Synapse's delegation written, Synapse's start until healthy,
and the runbook's tasks in between). The dry run measures the first two and takes the third as given:

- the import: the dry run's own duration. It does the real import's work (every stage, the rebuild,
  and Synapse's side of verify read from the snapshot during the rebuild), and rolls back;
- verify: what verify reads after the commit, measured by the dry run inside its transaction before the
  rollback: MAS's side (the digests of the imported rows, per bucket of keys, the query verify runs when
  Synapse is unchanged) and the fingerprint of Synapse's tables (verify compares it with the import's);
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

import time

from .stages import STAGES
from .verify import found_buckets_query, replay_params

# The service part of the window when the operator gives none: an estimate, not a measurement of the
# operator's hosts. README.md's measured window of test_runbook_e2e (5 users, so nearly all of it services and
# tasks: 30.0 s on a 2-core machine shared with two other test runs) puts it near 25 s; the runbook benchmark
# (bench/README.md) measured 89 to 161 s for it on the same machine at a load average of 5 to 14. A
# rehearsal's figure is what makes the prediction hold.
DEFAULT_SERVICE_SECONDS = 25.0


def verify_mas_side_seconds(mas_conn, layouts: dict, params: dict, row_hash: str) -> float:
    """Seconds for verify's pass over MAS's side (every stage's digests per bucket), run on `mas_conn`,
    whose transaction holds the rows (a dry run's, before its rollback)."""
    started = time.monotonic()
    with mas_conn.cursor() as cur:
        for stage in STAGES:
            columns, types, key = layouts[stage.name]
            cur.execute(found_buckets_query(stage, stage.table, columns, types, key, row_hash), params)
            cur.fetchall()
    return time.monotonic() - started


def predict(import_seconds: float, verify_seconds: float, service_seconds: float | None) -> dict:
    """The predicted window (seconds, one decimal) and its parts (three decimals)."""
    service = DEFAULT_SERVICE_SECONDS if service_seconds is None else float(service_seconds)
    if service < 0:
        raise ValueError(f"the window's service seconds must not be negative (got {service})")
    parts = {"import_seconds": round(import_seconds, 3), "verify_seconds": round(verify_seconds, 3),
             "service_seconds": round(service, 3)}
    return {"predicted_window_seconds": round(import_seconds + verify_seconds + service, 1),
            "predicted_window": parts}


def predict_from_dry_run(mas_conn, synapse_side, server_name: str, import_seconds: float,
                         service_seconds: float | None) -> dict:
    """The prediction at the end of a dry run: `synapse_side` is what it read of Synapse for verify (its
    layouts, replay record, row hash kind and the fingerprint's seconds), `mas_conn` its open transaction."""
    params = dict(replay_params(server_name, synapse_side.replay), new_token_devices=[])
    mas_seconds = verify_mas_side_seconds(mas_conn, synapse_side.layouts, params, synapse_side.row_hash)
    return predict(import_seconds, mas_seconds + synapse_side.fingerprint_seconds, service_seconds)
