# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The import: Synapse's users, passwords, third-party ids, SSO links, devices and tokens into MAS.

`run_import` is what the `syn2mas_import` module and `syn2mas --command migrate` call. Order:
configs → MAS (lock, schema, other clients, emptiness, privileges) → Synapse (privileges, other clients, locked
snapshot, checks) → one MAS transaction (drop constraints, COPY every stage, rebuild) → Synapse
checked once more (still there, nobody waiting to write) → marker (with the snapshot's
fingerprint and the digests of the rows written, for verify) → commit, or roll back for a dry run. A dry
run also recomputes from Synapse's snapshot the rows MAS must hold, and fails unless they are what its
transaction wrote: the proof of the path from Synapse to MAS comes before the downtime, and the real
run's window holds only the digests of what it wrote. Any error before the commit leaves MAS as it
was; the outcome reported is what MAS holds (a commit whose answer was lost is looked up, and the
end of the Synapse snapshot after the commit cannot fail the run).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from .. import __version__, errors
from . import mas_schema, window
from ..config import ConfigSources, load_mas_config, load_synapse_config, provider_mapping
from ..db import connect, connection_lost, database_conninfo, describe, first_line, psycopg2, same_database
from ..errors import (ConfigError, ConnectionLostError, DatabaseError, DataError, Interrupted, RefusedError,
                      Syn2masError)
from .mas_writer import (MasWriter, existing_providers, StatusRowPipe, read_marker, row_rewriters, run_pipe,
                         tables_with_data)
from .stages import STAGES, stage_params
from .synapse_reader import SynapseReader
from ..advisor.facts import MasDbFacts, mas_session_clients, synapse_session_facts
from ..advisor.refusals import import_facts, refuse
from .verify import expected_totals, replay_record, row_hash_kind, stage_layouts, totals_differences, written_totals

APPLICATION_NAME = "syn2mas"
# How long any one statement of the import waits for a lock beyond those it takes at the start
# (a table pointing at MAS's users, say), whatever the role's lock_timeout.
LOCK_TIMEOUT = "60s"


@dataclass
class ImportOptions(ConfigSources):
    upstream_provider_mapping: list = field(default_factory=list)
    skip_unmapped_providers: bool = False
    dry_run: bool = False
    # What the run writes into MAS's config before a real import (matrix.homeserver, providers as
    # `auth_provider:id`), which a dry run in check mode has not written: the dry run judges the
    # import against them. A real import reads the config as written and ignores them.
    planned_homeserver: str | None = None
    planned_provider_mapping: list = field(default_factory=list)
    maintenance_work_mem: str = "512MB"
    # How long to wait for a session holding the tables' locks (autovacuum cleaning up after an
    # aborted run gives way after deadlock_timeout; others may finish) before refusing.
    lock_wait_seconds: float = 60
    # progress(event) with event = {"stage", "rows", "total", "elapsed"} or {"stage", "message"}
    progress: Callable | None = None
    # A dry run's predicted window: the seconds of Synapse's and MAS's stops and starts (window.predict).
    window_service_seconds: float | None = None


@dataclass
class StageReport:
    migrated: int = 0
    skipped: int = 0
    skipped_reasons: dict = field(default_factory=dict)  # reason -> {"count", "examples"}
    fixed: dict = field(default_factory=dict)  # what was repaired -> count
    fixed_examples: dict = field(default_factory=dict)  # what was repaired -> example rows (when named)
    seconds: float = 0.0
    # reason -> count of every row skipped, reported here or by another stage (verify's record)
    skip_counts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"migrated": self.migrated, "skipped": self.skipped, "skipped_reasons": self.skipped_reasons,
                "fixed": self.fixed, "fixed_examples": self.fixed_examples, "seconds": round(self.seconds, 3)}


def stage_report(stage, pipe, seconds: float) -> StageReport:
    """What a stage's pipe saw: rows migrated, repaired, and skipped with reasons and examples."""
    report = StageReport(migrated=pipe.rows, seconds=seconds,
                         skip_counts={reason: count for reason, (count, _first, _last) in pipe.skipped.items()})
    if pipe.repaired:
        report.fixed[stage.fixed_label] = pipe.repaired
    for label, (count, first, last) in sorted(pipe.clamped.items()):
        report.fixed[label] = count
        report.fixed_examples[label] = sorted({first, last})
    if stage.report_skips:
        for reason, (count, first, last) in sorted(pipe.skipped.items()):
            report.skipped += count
            report.skipped_reasons[reason] = {"count": count, "examples": sorted({first, last})}
    return report


def _event(options: ImportOptions, **event) -> None:
    if options.progress:
        options.progress(event)


def _test_point(name: str) -> None:
    """Test-only, inert unless SYN2MAS_TEST_KILL_AT / SYN2MAS_TEST_PAUSE_AT names this point: the
    reliability suite kills the run here (SIGKILL) or stops it (SIGSTOP) to cut a connection."""
    if os.environ.get("SYN2MAS_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("SYN2MAS_TEST_PAUSE_AT") == name:
        os.kill(os.getpid(), signal.SIGSTOP)


def _check_configs(options: ImportOptions):
    synapse = load_synapse_config(options.synapse_config)
    server_name = synapse.server_name
    mas = load_mas_config(options.mas_config, options.mas_reader) if options.mas_config else None
    if mas is None and not options.mas_database_uri:
        raise ConfigError("MAS's config.yaml (or a MAS database URI) is needed to know where to import into")
    planned = options.dry_run
    mapping = provider_mapping(mas, options.upstream_provider_mapping,
                               planned=options.planned_provider_mapping if planned else None)
    facts = import_facts(synapse, server_name, mas, mapping, real_import=not options.dry_run)
    if mas is not None:  # judged on the homeserver the run writes into MAS's config, when planned
        facts.mas = _PlannedHomeserver(mas, options.planned_homeserver) if planned and options.planned_homeserver \
            else mas
        refuse(facts, "mas_homeserver_mismatch")
        facts.mas = mas
    synapse_conninfo = database_conninfo(synapse, options.synapse_database_uri, "the given Synapse database URI")
    mas_conninfo = database_conninfo(mas, options.mas_database_uri, "the given MAS database URI")
    return synapse, server_name, synapse_conninfo, mas_conninfo, mapping, facts


class _PlannedHomeserver:
    """MAS's config as the run will have written it: the planned matrix.homeserver."""

    def __init__(self, mas, homeserver: str):
        self.where, self.homeserver = mas.where, homeserver


def _plan_links(reader: SynapseReader, facts, writer: MasWriter, options: ImportOptions, warnings: list):
    """Checks every SSO provider in use is mapped to a MAS provider that MAS's database has."""
    mapping = facts.mapping
    in_use = facts.synapse_db.in_use = reader.auth_providers_in_use()
    unmapped = {p: n for p, n in in_use.items() if p not in mapping}
    if unmapped:
        listing = ", ".join(f"{p} ({n} link{'s' if n != 1 else ''})" for p, n in unmapped.items())
        if not options.skip_unmapped_providers:
            refuse(facts, "oauth_delegated_links", "sso_links_unknown_provider", "sso_provider_unmapped",
                   error=DataError)
        warnings.append(f"SSO links of unmapped providers are not migrated: {listing}")
    used = {p: link for p, link in mapping.items() if p in in_use}
    present = existing_providers(writer.conn, [link.provider_id for link in used.values()]) if used else set()
    missing = [link for link in used.values() if str(link.provider_id) not in present]
    # A provider the run is about to add has no row yet (the run's `mas-cli config sync` makes it):
    # a dry run stands a provisional row in for it, inside its rolled-back transaction.
    provisional = [link for link in missing if options.dry_run and link.source.startswith("planned by this run")]
    missing = [link for link in missing if link not in provisional]
    if provisional:
        warnings.append("dry run: provider(s) this run adds to MAS's config, not yet in MAS's database, stood in "
                        "for by provisional rows: " + ", ".join(link.auth_provider for link in provisional))
    if missing:
        facts.mas_db.providers_table = True
        facts.mas_db.providers_present = {str(p) for p in present}
        facts.mapping = {p: link for p, link in used.items() if link not in provisional}
        refuse(facts, "sso_provider_not_in_mas_database")
        facts.mapping = mapping
    return used, [link.provider_id for link in provisional]


@dataclass
class _Run:
    """Where a run is, for messages and for telling which side's connection was lost."""

    phase: str = "reading the configs"
    mas_conn: object = None
    synapse_conn: object = None


def run_import(options: ImportOptions) -> dict:
    """Runs the import; raises a Syn2masError (MAS left as it was) when it cannot complete, or
    Interrupted when a signal stopped it (MAS left as it was too)."""
    run = _Run()
    errors.defer_interrupts(False)
    # psycopg2 prints some errors it meets inside a COPY (a connection lost mid-stream) through
    # sys.excepthook, quoting the row being copied, which may hold a token: the run reports them.
    excepthook, sys.excepthook = sys.excepthook, _quiet_excepthook
    try:
        return _run_import(options, run)
    except BaseException as exc:
        raise _explained(exc, run) from None
    finally:
        sys.excepthook = excepthook
        for conn in (run.mas_conn, run.synapse_conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass


def _quiet_excepthook(_type, _value, _traceback) -> None:
    """Says nothing: what the driver would print is reported by the run, redacted."""


def _explained(exc: BaseException, run: _Run) -> BaseException:
    """The error to report for `exc`: a signal as Interrupted, a lost connection as one, naming the
    side and the phase, whatever layer noticed it."""
    signum = errors.pending_interrupt()
    if isinstance(exc, Interrupted):
        return exc
    if signum is not None or isinstance(exc, KeyboardInterrupt):
        return Interrupted(signum or 2)
    if isinstance(exc, (ConnectionLostError, RefusedError, ConfigError)):
        return exc
    for conn, what in ((run.synapse_conn, "Synapse"), (run.mas_conn, "MAS")):
        if conn is not None and getattr(conn, "closed", 0):
            detail = getattr(exc, "detail", None) or first_line(exc)
            return ConnectionLostError(
                f"lost the connection to {what}'s database ({run.phase}): {detail}. MAS was left as "
                "it was; run the import again"
            )
    if isinstance(exc, Syn2masError):
        return exc
    if psycopg2 is not None and isinstance(exc, psycopg2.Error):
        return DatabaseError(
            f"the import stopped on a database error ({run.phase}), and MAS was left as it was: {first_line(exc)}"
        )
    return exc


# A screen long on purpose: the run's steps in their order, inside the one try/finally that holds
# MAS's lock; each step is a function of its own below.
def _run_import(options: ImportOptions, run: _Run) -> dict:
    started = time.monotonic()
    run_at = datetime.now(timezone.utc)
    warnings: list = []
    synapse, server_name, synapse_conninfo, mas_conninfo, mapping, facts = _check_configs(options)

    run.phase = "connecting to MAS's database"
    mas_conn = run.mas_conn = connect(mas_conninfo, APPLICATION_NAME, "MAS", lock_timeout=LOCK_TIMEOUT)
    writer = MasWriter(mas_conn)
    try:
        run.phase = "checking MAS's database"
        writer.try_lock()
        _test_point("mas-checked")
        schema = mas_schema.detect(mas_conn)
        warnings.extend(schema.warnings)
        result = {
            "changed": False, "dry_run": options.dry_run, "already_imported": False,
            "synapse_changed_since_import": False,
            "server_name": server_name,
            "mas_schema": {"release": schema.release, "latest_migration": schema.latest_migration},
            "synapse_database": describe(synapse_conninfo), "mas_database": describe(mas_conninfo),
            "counts": {}, "warnings": warnings,
        }

        reader = _connect_synapse(run, mas_conn, synapse_conninfo, server_name)
        result["synapse_schema_version"] = reader.schema_version()

        previous = read_marker(mas_conn)
        facts.mas_db = MasDbFacts(clients=[], marker=previous)
        if previous is not None:
            refuse(facts, "mas_already_imported")  # an import of another server_name
            return _already_imported(result, previous, reader, server_name, started)

        links, provisional = _check_before_import(run, options, facts, reader, writer, warnings)

        params = stage_params(server_name, links, seed=secrets.randbits(62), run_ms=int(run_at.timestamp() * 1000))
        # Verify's record: Synapse's snapshot fingerprinted while MAS rebuilds its indexes, then the rows
        # written digested in MAS's transaction (a dry run also recomputes them from Synapse, and compares).
        record = _VerifyRecord(reader, params, links, server_name, cross_check=options.dry_run)
        reports, rebuild_seconds = _load(run, options, reader, writer, schema, params, provisional, record)

        counts = {name: report.as_dict() for name, report in reports.items()}
        result.update({
            "changed": True, "counts": counts,
            "stage_seconds": {**{n: round(r.seconds, 3) for n, r in reports.items()},
                              "rebuild": round(rebuild_seconds, 3)},
        })
        # verify's record: Synapse's side (its time, and the part after the rebuild and the digests) and
        # the digests of the rows written
        result["verify_record_seconds"] = {"total": round(record.seconds, 3),
                                           "after_rebuild": round(record.waited, 3),
                                           "written": round(record.written_seconds, 3)}
        if options.dry_run:
            # the proof of the path: every stage's rows recomputed from Synapse are the rows written
            result["verify_cross_check"] = {
                "stages": len(record.expected["stages"]),
                "rows": sum(stage["rows"] for stage in record.expected["stages"].values())}
            result.update(window.predict_from_dry_run(record, time.monotonic() - started,
                                                      options.window_service_seconds))
            writer.rollback()
            reader.end_snapshot()
        else:
            _commit_import(run, reader, writer, mas_conninfo, warnings, lambda: _with_record(writer, lambda: {
                "collection_version": __version__, "imported_at": run_at.isoformat(timespec="milliseconds"),
                "server_name": server_name, "migrated": {n: r.migrated for n, r in reports.items()},
                # The snapshot the stages read, whatever point of its transaction reads it: only a
                # real import records one (its marker), so a dry run skips this pass over the tables.
                "run_id": secrets.token_hex(8), "synapse_fingerprint": record.fingerprint,
                # What `syn2mas --command verify` needs to recompute the import's rows and ids...
                "replay": record.replay,
                # ...and the digests of the rows written, which it compares MAS with while Synapse is unchanged.
                "expected": record.written,
                # What the import dropped and rebuilt, for verify to find each one still there and valid.
                "rebuilt": {"constraints": [list(c) for c in writer.saved_constraints],
                            "indexes": [[name, definition] for name, definition, _table in writer.saved_indexes]},
            }))
        result["duration_seconds"] = round(time.monotonic() - started, 3)
        return result
    except BaseException:
        writer.rollback()
        raise
    finally:
        writer.unlock()


def _with_record(writer: MasWriter, build: Callable) -> dict:
    """The marker, with the import's transaction id: every row the import wrote carries it (xmin)
    for as long as nothing updates it, which tells verify, row by row and at no cost to the import,
    which rows MAS still holds as the import wrote them."""
    marker = build()
    with writer.conn.cursor() as cur:
        cur.execute("SELECT txid_current() % 4294967296")
        marker["xid"] = int(cur.fetchone()[0])
    return marker


def _connect_synapse(run: _Run, mas_conn, synapse_conninfo: dict, server_name: str) -> SynapseReader:
    run.phase = "connecting to Synapse's database"
    synapse_conn = run.synapse_conn = connect(synapse_conninfo, APPLICATION_NAME, "Synapse", lock_timeout=LOCK_TIMEOUT)
    run.phase = "checking Synapse's database"
    if same_database(mas_conn, synapse_conn):
        raise RefusedError(
            f"Synapse's and MAS's database are the same database ({describe(synapse_conninfo)}): the import "
            "reads one and fills the other; check which URI or config points at the wrong one"
        )
    return SynapseReader(synapse_conn, server_name)


def _load(run: _Run, options: ImportOptions, reader: SynapseReader, writer: MasWriter, schema, params: dict,
          provisional: list, record: "_VerifyRecord"):
    """MAS's transaction opened and filled: constraints dropped, every stage copied, constraints
    rebuilt (while `record` reads Synapse), and the rows written digested for verify's record.
    Returns ({stage name: StageReport}, the rebuild's seconds)."""
    estimates = reader.estimated_rows()
    run.phase = "locking MAS's tables"
    writer.begin(options.maintenance_work_mem, lock_wait_seconds=options.lock_wait_seconds)
    _test_point("mas-locked")
    record.layouts = stage_layouts(writer.conn, schema)  # MAS's tables as verify will read them, keys included
    if provisional:
        writer.add_provisional_providers(provisional)
    run.phase = "dropping MAS's constraints and indexes"
    writer.drop_constraints_and_indexes()
    _test_point("constraints-dropped")
    reports = _copy_stages(run, options, reader, writer, schema, params, estimates)
    record.start(row_hash_kind(reader.conn, writer.conn))
    try:
        rebuild_seconds = _rebuild(run, options, writer)
        run.phase = "digesting the rows written, for verify"
        record.digest_written(writer.conn, reports)
    except BaseException:
        record.abandon()
        raise
    run.phase = "reading Synapse's side of verify"
    waited = time.monotonic()
    record.wait()
    record.waited = time.monotonic() - waited
    record.check_cross()
    return reports, rebuild_seconds


class _VerifyRecord:
    """What the import records for verify: of Synapse's snapshot the highest token ids and the tables'
    fingerprint, read on Synapse's connection in a thread while the main thread rebuilds MAS's indexes
    (Synapse's connection is idle then, and on two databases the work overlaps instead of adding up), and
    the digests of the rows written, read in MAS's transaction after the rebuild.

    With `cross_check` (a dry run) the thread also recomputes from Synapse the rows MAS must hold
    (verify's own pass over Synapse), and `check_cross` fails the run unless they are the rows written.
    The real run leaves that pass out of the downtime window: its verify compares MAS with the digests of
    what it wrote while Synapse is unchanged, and recomputes Synapse's side once Synapse changed."""

    def __init__(self, reader: SynapseReader, params: dict, links: dict, server_name: str, cross_check: bool = False):
        self.reader, self.params, self.links, self.server_name = reader, params, links, server_name
        self.cross_check = cross_check
        self.layouts: dict = {}
        self.replay = self.fingerprint = self.expected = self.written = None
        self.seconds = self.waited = 0.0  # its time in all, and what of it the rebuild did not cover
        self.written_seconds = 0.0  # the digests of the rows written (what verify repeats on MAS's side)
        self.fingerprint_seconds, self.row_hash = 0.0, "md5"  # what verify repeats of Synapse (a dry run's window)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, row_hash: str) -> None:
        self.row_hash = row_hash
        # The replay record first, on this thread: the digests of the rows written need its parameters.
        self.replay = replay_record(self.reader, self.params, self.links)
        self._thread = threading.Thread(target=self._read, args=(row_hash,), name="synapse-side", daemon=True)
        self._thread.start()

    def _read(self, row_hash: str) -> None:
        started = time.monotonic()
        try:
            fingerprint_started = time.monotonic()
            self.fingerprint = self.reader.fingerprint()
            self.fingerprint_seconds = time.monotonic() - fingerprint_started
            if self.cross_check:
                self.expected = expected_totals(self.reader.conn, self.layouts, self.replay, self.server_name,
                                                row_hash)
        except BaseException as exc:  # handed to the main thread, which raises it
            self._error = exc
        self.seconds = time.monotonic() - started

    def digest_written(self, mas_conn, reports: dict) -> None:
        """The rows written, digested in MAS's transaction as verify's pass over MAS will digest them."""
        started = time.monotonic()
        skipped = {name: report.skip_counts for name, report in reports.items()}
        self.written = written_totals(mas_conn, self.layouts, self.replay, self.server_name, self.row_hash, skipped)
        self.written_seconds = time.monotonic() - started

    def check_cross(self) -> None:
        """A dry run's proof of the path: the rows written are the rows recomputed from Synapse."""
        if not self.cross_check:
            return
        differ = totals_differences(self.expected, self.written)
        if differ:
            raise DataError(
                "the rows the import wrote into MAS are not the rows recomputed from Synapse's snapshot ("
                + "; ".join(differ) + "); nothing was written to MAS. Something between the two databases "
                "changes rows on the way (a trigger or rule on MAS's tables, a column default, a server "
                "setting): check MAS's tables for triggers, and report the stage named if there is none"
            )

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """The run failed meanwhile: Synapse's query cancelled, so the connection can be closed."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self.reader.conn.cancel()
            except Exception:  # the connection is gone already
                pass
            self._thread.join(timeout=30)


# A MAS (or mas-cli) that has just exited leaves its sessions in pg_stat_activity until PostgreSQL has ended
# them, a moment later (longer on a busy or remote server): they are waited for this long before they count.
CLOSING_SESSIONS_GRACE = 5.0


def _mas_clients_left(conn, grace: float) -> list:
    """MAS's database's other sessions once those ending have gone, or as they are after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        clients = mas_session_clients(conn)
        if not clients or time.monotonic() >= deadline:
            return clients
        time.sleep(0.1)


def _check_before_import(run: _Run, options: ImportOptions, facts, reader: SynapseReader, writer: MasWriter,
                         warnings: list):
    """The refusals before anything is written (as the advisor words them), Synapse's snapshot taken,
    and the SSO links planned: (links, provisional providers)."""
    # A MAS still connected would write beside the import (and cache what it replaces): an ERROR
    # for the real import only. The import's own session is not another client.
    facts.mas_db.clients = _mas_clients_left(writer.conn, 0 if options.dry_run else CLOSING_SESSIONS_GRACE)
    refuse(facts, "mas_running")
    facts.mas_db.filled = tables_with_data(writer.conn)
    refuse(facts, "mas_not_empty")
    facts.mas_db.rewriters = row_rewriters(writer.conn)
    refuse(facts, "mas_row_rewriters")  # the rows written would not be the rows verify's record digests
    writer.check_privileges()
    reader.check_privileges(lock=not options.dry_run)

    facts.synapse_db = synapse_session_facts(reader)
    refuse(facts, "synapse_schema_too_old")
    clients = facts.synapse_db.clients
    if clients:
        listing = "; ".join(str(c) for c in clients)
        refuse(facts, "synapse_running")  # an ERROR for the real import only
        warnings.append(f"Synapse's database has other clients (fine for a dry run, not for the import): {listing}")

    run.phase = "locking Synapse's tables"
    reader.begin_snapshot(lock=not options.dry_run, lock_wait_seconds=options.lock_wait_seconds)
    facts.synapse_db.snapshot = True
    _test_point("synapse-locked")
    run.phase = "checking Synapse's data"
    facts.synapse_db.wrong_server_name = reader.users_with_wrong_server_name()
    refuse(facts, "wrong_server_name_users", error=DataError)
    links, provisional = _plan_links(reader, facts, writer, options, warnings)
    return links, provisional


def _copy_stages(run: _Run, options: ImportOptions, reader: SynapseReader, writer: MasWriter, schema, params: dict,
                 estimates: dict) -> dict:
    """Every stage streamed from Synapse's snapshot into MAS's transaction: {stage name: StageReport}."""
    reports = {}
    for stage in STAGES:
        run.phase = f"stage {stage.name}"
        columns = schema.target_columns(stage.table)
        stage_started = time.monotonic()

        def on_rows(rows, _stage=stage, _t=stage_started):
            _test_point(f"copying-{_stage.name}")
            # The total is the planner's estimate of the source table (exact counts cost a pass).
            _event(options, stage=_stage.name, rows=rows, total=estimates.get(_stage.source_table),
                   elapsed=time.monotonic() - _t)

        written, pipe = run_pipe(
            lambda pipe, _s=stage, _c=columns: reader.copy_stage(_s, _c, params, pipe),
            lambda pipe, _s=stage, _c=columns: writer.copy_into(_s.table, _c, pipe),
            pipe=StatusRowPipe(on_rows=on_rows),
        )
        report = reports[stage.name] = stage_report(stage, pipe, time.monotonic() - stage_started)
        if written != pipe.rows:
            raise DataError(
                f"stage {stage.name}: MAS took {written} rows but {pipe.rows} were sent; nothing was written to MAS"
            )
        _event(options, stage=stage.name, rows=written, total=written, elapsed=report.seconds, done=True)
        _test_point(f"copied-{stage.name}")
    return reports


def _rebuild(run: _Run, options: ImportOptions, writer: MasWriter) -> float:
    """MAS's indexes and constraints rebuilt over the loaded rows; returns the seconds it took."""
    run.phase = "rebuilding MAS's indexes and constraints"
    rebuild_started = time.monotonic()

    def on_step(name, index, steps):
        _test_point(f"rebuild-{name}")
        _event(options, stage="rebuild", message=name, rows=index, total=steps,
               elapsed=time.monotonic() - rebuild_started)

    writer.rebuild(on_step=on_step)
    _test_point("rebuilt")
    rebuild_seconds = time.monotonic() - rebuild_started
    return rebuild_seconds


def _commit_import(run: _Run, reader: SynapseReader, writer: MasWriter, mas_conninfo: dict, warnings: list,
                   make_marker: Callable) -> None:
    """The marker written and MAS's transaction committed, once Synapse is known untouched; the
    snapshot ends after the commit, where losing it cannot fail a committed import."""
    run.phase = "checking Synapse before the commit"
    _check_synapse_untouched(reader)
    marker = make_marker()
    writer.set_marker(marker)
    _test_point("marker-written")
    run.phase = "committing MAS's transaction"
    # From here the outcome is MAS's: a signal no longer stops the run, which reports it.
    errors.defer_interrupts()
    _test_point("before-commit")
    _commit(writer, mas_conninfo, marker["run_id"], warnings)
    _test_point("committed")
    note = reader.end_snapshot_after_commit()
    if note:
        warnings.append(note)


def _check_synapse_untouched(reader: SynapseReader) -> None:
    """Refuses the commit when a session would write to Synapse as soon as the snapshot ends (it
    waits on the snapshot's locks) or connected since the import checked: MAS would miss it."""
    sessions = reader.sessions_since_lock()
    if sessions:
        listing = "; ".join(f"{client} ({client.state})" for client in sessions)
        raise RefusedError(
            f"Synapse's database got other clients during the import: {listing}. What they write would be "
            "missing from MAS, so nothing was written to MAS: stop Synapse and its workers (and close other "
            "sessions), then import again"
        )


def _commit(writer: MasWriter, mas_conninfo: dict, run_id: str, warnings: list) -> None:
    """Commits MAS's transaction; when the answer is lost, looks up whether it happened."""
    try:
        writer.commit()
        return
    except Exception as exc:
        failure = first_line(exc)
        lost = connection_lost(writer.conn, exc)
    if not lost:
        errors.defer_interrupts(False)
        raise DatabaseError(f"MAS refused the commit, and MAS was left as it was: {failure}")
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = connect(mas_conninfo, APPLICATION_NAME, "MAS", lock_timeout=LOCK_TIMEOUT)
        except DatabaseError as exc:
            if time.monotonic() < deadline:
                time.sleep(1)
                continue
            raise ConnectionLostError(
                f"lost the connection to MAS's database at the commit ({failure}) and cannot reach it since "
                f"({exc}): whether the import was committed is unknown. Run the import again once MAS's "
                "database is back: it reports `already imported` if it was, and imports if it was not"
            ) from None
        try:
            previous = read_marker(conn)
        finally:
            conn.close()
        break
    if previous is not None and previous.get("run_id") == run_id:
        warnings.append(f"the connection to MAS's database was lost at the commit ({failure}); MAS holds the "
                        "import: it was committed")
        return
    errors.defer_interrupts(False)
    raise ConnectionLostError(
        f"lost the connection to MAS's database at the commit ({failure}); the import was not committed, and "
        "MAS was left as it was: run the import again"
    )


def _already_imported(result: dict, previous: dict, reader: SynapseReader, server_name: str, started: float) -> dict:
    """A MAS database this import already filled: nothing to do, but say if Synapse changed since,
    as the import does not merge (the runbook refuses such a stale import)."""
    result["already_imported"] = True
    # What only verify reads (the record of the rows, of the rebuilt constraints) stays out of the result.
    result["previous_import"] = {k: v for k, v in previous.items()
                                 if k not in ("synapse_fingerprint", "rebuilt", "digest", "xid", "expected")}
    reader.begin_snapshot(lock=False)
    then = previous.get("synapse_fingerprint")
    changes = []
    if then:
        now = reader.fingerprint()
        for table in sorted(set(then) | set(now)):
            old, new = then.get(table) or {}, now.get(table) or {}
            if old != new:
                if old.get("rows") != new.get("rows"):
                    changes.append(f"{table}: {old.get('rows')} rows then, {new.get('rows')} now")
                else:
                    changes.append(f"{table}: rows changed")
    else:  # a marker of an older collection version: only its user count to compare
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM users WHERE appservice_id IS NULL")
            now_users = cur.fetchone()[0]
        then_users = (previous.get("migrated") or {}).get("users")
        if then_users is not None and then_users != now_users:
            changes.append(f"users: {then_users} imported, {now_users} now")
    reader.end_snapshot()
    result["synapse_changed_since_import"] = bool(changes)
    result["synapse_changes"] = changes
    if changes:
        result["warnings"].append(
            f"Synapse changed since MAS was filled from it on {previous.get('imported_at')} ({'; '.join(changes)}): "
            "MAS lacks these changes, and the import does not merge. To redo it, restore MAS's empty database "
            "and import again"
        )
    result["counts"] = {name: {"migrated": n, "skipped": 0, "skipped_reasons": {}, "fixed": {}}
                        for name, n in (previous.get("migrated") or {}).items()}
    result["duration_seconds"] = round(time.monotonic() - started, 3)
    return result
