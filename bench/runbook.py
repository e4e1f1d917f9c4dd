"""The runbook benchmark: the downtime window of playbooks/migrate.yml at N users, measured end to end and
predicted by the dry run, side by side with the import alone and the raw-copy floor.

    .venv/bin/python bench/runbook.py [N ...] [--seed S] [--no-alone] [--no-plot]

(or `scripts/bench-runbook.sh [N ...]`, `make bench-runbook N=...`). For each N, on one throwaway
PostgreSQL cluster (tests/support/pgcluster.py):

1. Synapse's database of N generated users, as bench/run.py generates it (generate_synapse_db);
2. the import alone and the floor, as bench/run.py measures them (`syn2mas --command migrate` into a fresh
   MAS database, then the floor's COPY | COPY and build over the same rows), before Synapse runs;
3. MAS's config and a fresh MAS database as bench/run.py builds them; MAS itself is the tests' STAND-IN
   (tests/support/mas_stand_in.py: no MAS binary can be had here), started, stopped and restarted by the
   mas_service role with `mas_service_manager: command`; a REAL Synapse (matrix-synapse of the newest tested
   release, its own venv) started on the generated database, stopped and started by the synapse_service role
   with `synapse_service_manager: command`;
4. `ansible-playbook playbooks/migrate.yml --check`, then the real run, over the local connection with the
   collection as scripts/setup.sh installs it. The window (Synapse stopped -> healthy and delegating) and
   its phases are read from the run's own fleet report (`hosts.<h>.downtime_seconds`, `phase_seconds`,
   `import_seconds`); the predicted window from the check run (predicted_window: the report's
   `predicted_window_seconds` once it carries it, else the import's check-mode result); verify's seconds
   from its result in the run (`data.duration_seconds`).

While it runs, a line per phase on stderr (the role of the task now running, followed by a callback:
bench/callback_plugins/bench_follow.py) and, during the import, the rows imported so far and the stage as
MAS's PostgreSQL reports them (pg_stat_progress_copy, pg_stat_progress_create_index) every 10 s.

Peak RSS: every process the run starts on the host (ansible's module processes, the import's included),
sampled from /proc/<pid>/status (VmHWM) every 0.25 s; ansible-playbook itself (the controller), Synapse and
the MAS stand-in are shown separately and are not in the "peak rss" of the summary line.

Appends a record per size (kind "runbook") to bench/results/results.json, redraws bench/results/bench.png
(bench/run.py's plot, with the window's panel) and ends with one line per size:

    runbook 1000000 users: window 84.2 s, import/floor 1.27, verify share 0.21, peak rss 61 MB, predicted 80.0 s
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import yaml  # noqa: E402

from bench import run as bench  # noqa: E402  (sets up the library's path too)
from tests.support import homeservers, mas_stand_in  # noqa: E402

VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
CALLBACKS = os.path.join(ROOT, "bench", "callback_plugins")
HOST = "bench"
MAS_SECRET = "bench-shared-secret"
PROGRESS_EVERY = 10.0
SAMPLE_EVERY = 0.25
# Targets of issue 20 at 1M users (shown in the summary, never asserted).
TARGET_WINDOW_S = 90.0
TARGET_IMPORT_OVER_FLOOR = 1.3
TARGET_VERIFY_SHARE = 0.25
TARGET_PEAK_RSS_MB = 100.0
TARGET_PREDICTION = 0.20


def log(message: str) -> None:
    bench.log(message)


# ------------------------------------------------------------------------------------------
# The homeserver: Synapse's config (bench/run.py's, made runnable), MAS's, the inventory
# ------------------------------------------------------------------------------------------

class BenchHomeserver:
    """A real Synapse on the generated database (tests/support/homeservers.py's Homeserver, on bench/run.py's
    config made runnable), and MAS's stand-in on the benchmark's MAS config."""

    def __init__(self, cluster, workdir: str, synapse_db: str, mas_db: str):
        self.synapse = homeservers.Homeserver(cluster, HOST, workdir, synapse_db=synapse_db, mas_db=mas_db)
        self.dir = self.synapse.dir
        self.base_url = self.synapse.base_url
        self.python = self.synapse.python
        self.report_dir = os.path.join(workdir, "reports")
        self.follow_dir = os.path.join(workdir, "follow")
        os.makedirs(self.follow_dir, exist_ok=True)
        os.makedirs(self.synapse.confdir, exist_ok=True)
        # bench/run.py's configs, at the homeserver's own paths; Synapse's made runnable here.
        written = bench.write_configs(cluster, self.synapse.confdir, synapse_db, mas_db)
        self.homeserver_yaml, self.mas_yaml = self.synapse.homeserver_yaml, self.synapse.mas_yaml
        for path, own in zip(written, (self.homeserver_yaml, self.mas_yaml)):
            os.replace(path, own)
        with open(self.homeserver_yaml) as handle:
            homeserver = yaml.safe_load(handle)
        homeserver.update(self.synapse.runnable_settings())
        with open(self.homeserver_yaml, "w") as handle:
            yaml.safe_dump(homeserver, handle, sort_keys=False)
        os.chmod(self.mas_yaml, 0o600)
        self.mas = mas_stand_in.MasStandIn(self.mas_yaml, state_dir=os.path.join(self.dir, "mas"))
        self.synapse.generate_keys()

    def start(self, timeout: float) -> None:
        self.mas.start()
        self.synapse.start(timeout)

    def stop(self) -> None:
        self.synapse.stop()
        try:
            self.mas.stop()
        except Exception:  # best effort: the stand-in may be down already
            pass

    def write_inventory(self, service_timeout: int, service_seconds: float | None = None) -> str:
        host = {
            "ansible_connection": "local", "ansible_python_interpreter": VENV_PYTHON,
            "syn2mas_report_dir": self.report_dir,
            "syn2mas_synapse_config": [self.homeserver_yaml],
            "syn2mas_mas_config": [self.mas_yaml],
            "syn2mas_mas_secret": MAS_SECRET,
            "syn2mas_mas_endpoint": f"{self.mas.url}/",
            # MAS's public_base (https://auth.<server>/) has no server here: the controller asks the stand-in.
            "syn2mas_mas_public_url": f"{self.mas.url}/",
            "syn2mas_synapse_endpoint": f"{self.base_url}/",
            "syn2mas_synapse_health_url": f"{self.base_url}/health",
            "syn2mas_synapse_python": self.python,
            "syn2mas_python": VENV_PYTHON,
            "syn2mas_backup_dir": os.path.join(self.dir, "backups"),
            "syn2mas_state_file": os.path.join(self.dir, "state", "state.json"),
            "well_known_enabled": False,  # after the window; the bench has no web server for it
            "synapse_service_manager": "command",
            "synapse_service_start_command": self.synapse.start_command,
            "synapse_service_stop_command": self.synapse.stop_command,
            "synapse_service_start_timeout": service_timeout,
            "synapse_service_stop_timeout": service_timeout,
            "mas_service_manager": "command",
            "mas_service_start_command": self.mas.start_command,
            "mas_service_stop_command": self.mas.stop_command,
            "mas_service_restart_command": self.mas.restart_command,
            "mas_service_start_timeout": 60,
            "mas_service_stop_timeout": 60,
        }
        if service_seconds is not None:  # the dry run's predicted window adds these (a rehearsal's figure)
            host["syn2mas_window_service_seconds"] = round(service_seconds, 1)
        path = os.path.join(self.dir, "inventory.yml")
        with open(path, "w") as handle:
            yaml.safe_dump({"all": {"children": {"synapse": {"hosts": {HOST: host}}}}}, handle, sort_keys=False)
        return path


# ------------------------------------------------------------------------------------------
# Following the run: phases, the import's progress, the processes' peak RSS
# ------------------------------------------------------------------------------------------

def _proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _sep, value = line.partition(":")
                if key in ("PPid", "VmHWM"):
                    out[key] = value.strip()
    except OSError:
        pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Follower:
    """Samples, while ansible-playbook runs: the task now running (from the callback), each process of the
    run's peak RSS, and during the import MAS's COPY and index builds; prints a line per phase."""

    def __init__(self, cluster, hs: BenchHomeserver, mas_db: str, label: str, follow_dir: str):
        self.cluster, self.hs, self.mas_db, self.label, self.follow_dir = cluster, hs, mas_db, label, follow_dir
        self.root_pid = None
        self.stop_event = threading.Event()
        self.processes: dict = {}  # pid -> {"cmd", "task", "role", "hwm_kb"}
        self.synapse_hwm_kb = 0
        self.mas_hwm_kb = 0
        self.phases: list = []
        self._role = None
        self._last_progress = 0.0
        self._progress_conn = None
        # MAS's tables by oid: the progress views are read from another database, where regclass cannot name them.
        self._tables = dict(cluster.execute(
            "SELECT oid::bigint, relname::text FROM pg_class WHERE relkind = 'r' AND relnamespace = "
            "'public'::regnamespace", mas_db))
        self.thread = threading.Thread(target=self._loop, daemon=True, name="bench-follower")

    def start(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.thread.start()

    def finish(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)
        if self._progress_conn is not None:
            self._progress_conn.close()

    def _task(self) -> dict:
        try:
            with open(os.path.join(self.follow_dir, "task")) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def _loop(self) -> None:
        while not self.stop_event.wait(SAMPLE_EVERY):
            try:
                self._sample()
            except Exception as exc:  # a follower never stops the run
                log(f"{self.label}: follower: {exc!r}")

    def _sample(self) -> None:
        task = self._task()
        role = (task.get("role") or "").rsplit(".", 1)[-1]
        name = task.get("name", "").split(" : ", 1)[-1]
        # A phase is a role of the collection (the playbook's own tasks between them only mark the phases).
        if role and role != self._role and not name.startswith("Validating arguments"):
            self._role = role
            self.phases.append((time.time(), role, name))
            log(f"{self.label}: phase {role}: {name}")
        self._sample_processes(task)
        if self._role == "import" and time.monotonic() - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = time.monotonic()
            self._import_progress()

    def _sample_processes(self, task: dict) -> None:
        parents, hwm = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                status = _proc_status(int(entry))
                if "PPid" in status:
                    parents[int(entry)] = int(status["PPid"])
                    if "VmHWM" in status:
                        hwm[int(entry)] = int(status["VmHWM"].split()[0])
        for pid, kb in hwm.items():
            ancestor, depth = pid, 0
            while ancestor not in (self.root_pid, 0, 1) and depth < 50:
                ancestor, depth = parents.get(ancestor, 0), depth + 1
            if ancestor != self.root_pid:
                continue
            proc = self.processes.get(pid)
            if proc is None:  # first seen: the task running now started it
                proc = self.processes[pid] = {"cmd": _cmdline(pid)[:200], "task": task.get("name", ""),
                                              "role": task.get("role", ""), "hwm_kb": 0}
            proc["hwm_kb"] = max(proc["hwm_kb"], kb)
        synapse = self.hs.synapse.pid()
        if synapse and synapse in hwm:
            self.synapse_hwm_kb = max(self.synapse_hwm_kb, hwm[synapse])
        mas = self.hs.mas.pid()
        if mas and mas in hwm:
            self.mas_hwm_kb = max(self.mas_hwm_kb, hwm[mas])

    def _import_progress(self) -> None:
        """MAS's side of the import as PostgreSQL reports it: the table being loaded and its rows so far,
        or the index being built."""
        if self._progress_conn is None:
            self._progress_conn = self.cluster.connect("postgres")
        with self._progress_conn.cursor() as cur:
            cur.execute("""SELECT c.relid::bigint, c.tuples_processed FROM pg_stat_progress_copy c
                           WHERE c.datname = %s AND c.command = 'COPY FROM'""", (self.mas_db,))
            copies = [(self._tables.get(oid, oid), rows) for oid, rows in cur.fetchall()]
            cur.execute("""SELECT i.relid::bigint, i.phase, i.tuples_done, i.tuples_total
                           FROM pg_stat_progress_create_index i WHERE i.datname = %s""", (self.mas_db,))
            builds = [(self._tables.get(oid, oid), *rest) for oid, *rest in cur.fetchall()]
        for table, rows in copies:
            log(f"{self.label}: import: loading {table}, {rows:,} rows so far")
        for table, phase, done, total in builds:
            log(f"{self.label}: import: rebuilding indexes and constraints of {table} ({phase}, {done:,}/{total:,})")
        if not copies and not builds:
            log(f"{self.label}: import: {self._task().get('name', '')}")

    def rss(self) -> dict:
        """Peak RSS (MB): the host side of the run (every process it started but the controller), the
        import's process, the controller, Synapse and the MAS stand-in."""
        def mb(kb):
            return round(kb / 1024.0, 1)

        # Synapse and the stand-in are started by the run's commands, but are no process of the migration.
        apart = ("synapse.app.homeserver", mas_stand_in.THIS_FILE)
        own = [p for p in self.processes.values() if not any(a in p["cmd"] for a in apart)]
        host = [p for p in own if "ansible-playbook" not in p["cmd"]]
        controller = [p for p in own if "ansible-playbook" in p["cmd"]]
        imp = [p for p in host if "Import Synapse's users" in p["task"]]
        top = max(host, key=lambda p: p["hwm_kb"], default=None)
        return {"host_peak_mb": mb(top["hwm_kb"]) if top else None,
                "host_peak_task": top["task"] if top else None,
                "import_mb": mb(max((p["hwm_kb"] for p in imp), default=0)) or None,
                "controller_mb": mb(max((p["hwm_kb"] for p in controller), default=0)) or None,
                "synapse_mb": mb(self.synapse_hwm_kb) or None, "mas_stand_in_mb": mb(self.mas_hwm_kb) or None,
                "processes_sampled": len(self.processes)}


def run_playbook(cluster, hs: BenchHomeserver, inventory: str, mas_db: str, check: bool, timeout: int) -> dict:
    """migrate.yml (with --check when `check`), followed; its report's host entry, the followed results."""
    label = "check run" if check else "real run"
    follow_dir = os.path.join(hs.follow_dir, "check" if check else "run")
    os.makedirs(follow_dir, exist_ok=True)
    before = set(glob.glob(os.path.join(hs.report_dir, "*", "migrate.json")))
    cmd = [PLAYBOOK, "-i", inventory, os.path.join(ROOT, "playbooks", "migrate.yml")] + (["--check"] if check else [])
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_PIPELINING="1", ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, ANSIBLE_CALLBACKS_ENABLED="bench_follow",
               BENCH_FOLLOW_DIR=follow_dir, PYTHONDONTWRITEBYTECODE="1",
               PATH=os.path.dirname(VENV_PYTHON) + os.pathsep + os.environ.get("PATH", ""))
    out_path = os.path.join(hs.dir, f"ansible-{'check' if check else 'run'}.out")
    follower = Follower(cluster, hs, mas_db, label, follow_dir)
    log(f"{label}: ansible-playbook {'--check ' if check else ''}playbooks/migrate.yml (output: {out_path})")
    started = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        follower.start(proc.pid)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0) if timeout <= 0 else _wait4_with_timeout(proc, timeout)
        finally:
            follower.finish()
            if proc.returncode is None and _still_running(proc.pid):  # the harness stopped: so does the run
                proc.terminate()
    wall = time.monotonic() - started
    rc = os.waitstatus_to_exitcode(status)
    with open(out_path) as handle:
        output = handle.read()
    reports = sorted(set(glob.glob(os.path.join(hs.report_dir, "*", "migrate.json"))) - before, key=os.path.getmtime)
    if not reports:
        raise RuntimeError(f"{label}: no report (exit {rc}); ansible said:\n{output[-4000:]}")
    with open(reports[-1]) as handle:
        report = json.load(handle)
    entry = report["hosts"][HOST]
    if rc != 0 or entry["outcome"] not in ("migrated", "would migrate (check mode)"):
        raise RuntimeError(f"{label}: exit {rc}, outcome {entry['outcome']!r}: {entry.get('error')}\n{output[-4000:]}")
    results = []
    path = os.path.join(follow_dir, "results.jsonl")
    if os.path.exists(path):
        with open(path) as handle:
            results = [json.loads(line) for line in handle if line.strip()]
    log(f"{label}: done in {wall:.1f}s, outcome {entry['outcome']!r}")
    return {"report": report, "host": entry, "results": results, "wall_seconds": round(wall, 3),
            "controller_tree_max_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "rss": follower.rss(),
            "phases_seen": [{"at": at, "role": role, "task": name} for at, role, name in follower.phases],
            "report_path": reports[-1], "results_path": path}


def _still_running(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def _wait4_with_timeout(proc, timeout: int):
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return pid, status, usage
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGTERM)
            raise RuntimeError(f"ansible-playbook ran longer than {timeout}s: stopped")
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------
# What the line says: read from the runs, never computed from the harness's own clocks
# ------------------------------------------------------------------------------------------

def _followed_result(run: dict, action: str, having: str | None = None) -> dict:
    found = [r["result"] for r in run["results"]
             if r["action"] == action and r["host"] == HOST and (having is None or having in r["result"])]
    return found[-1] if found else {}


def predicted_window(check_run: dict) -> float | None:
    """The window the check run predicts for the host: the report's key once the report carries it
    (hosts.<h>.predicted_window_seconds), else the import's check-mode result as ansible registered it."""
    value = check_run["host"].get("predicted_window_seconds")
    if value is None:
        value = _followed_result(check_run, "syn2mas_import").get("predicted_window_seconds")
    return value


def verify_seconds(real_run: dict) -> float | None:
    """verify's own duration in the real run (its module's result)."""
    data = _followed_result(real_run, "syn2mas_verify", having="data").get("data") or {}
    return data.get("duration_seconds")


def summarize_runbook(record: dict) -> dict:
    """The summary line's figures, each read from the runs' reports and results."""
    real, check = record["real_run"], record["check_run"]
    host = real["host"]
    import_seconds = host["import_seconds"]
    floor = (record.get("floor") or {}).get("total_seconds")
    verify = verify_seconds(real)
    return {
        "window_seconds": host["downtime_seconds"],
        "phase_seconds": {p["phase"]: p["seconds"] for p in host["phase_seconds"]},
        "window_phases": host.get("window_phases"),
        "import_seconds": import_seconds,
        "import_alone_seconds": (record.get("import_alone") or {}).get("wall_seconds"),
        "floor_seconds": floor,
        "import_over_floor": bench._ratio(import_seconds, floor) if floor and import_seconds else None,
        "verify_seconds": verify,
        "verify_share": bench._ratio(verify, import_seconds) if verify is not None and import_seconds else None,
        "peak_rss_mb": real["rss"]["host_peak_mb"],
        "predicted_window_seconds": predicted_window(check),
        "predicted_window": check["host"].get("predicted_window")
        or _followed_result(check, "syn2mas_import").get("predicted_window"),
        "window_service_seconds": host.get("window_service_seconds"),
    }


def _fmt(value, spec: str, none: str = "-") -> str:
    return format(value, spec) if value is not None else none


def _quotient(a, b):
    return a / b if a is not None and b else None


def summary_line(record: dict) -> str:
    s = record["summary"]
    # The ratios from the seconds themselves: formatting the summary's (rounded to three decimals) would round
    # twice (2.2553 -> 2.255 -> "2.25").
    over_floor = _quotient(s["import_seconds"], s["floor_seconds"])
    verify_share = _quotient(s["verify_seconds"], s["import_seconds"])
    return (f"runbook {record['n_users']} users: window {_fmt(s['window_seconds'], '.1f')} s, "
            f"import/floor {_fmt(over_floor, '.2f')}, verify share {_fmt(verify_share, '.2f')}, "
            f"peak rss {_fmt(s['peak_rss_mb'], '.0f')} MB, predicted {_fmt(s['predicted_window_seconds'], '.1f')} s")


def format_runbook_table(record: dict) -> str:
    s, rss = record["summary"], record["real_run"]["rss"]
    alone = record.get("import_alone") or {}
    lines = [f"N = {record['n_users']:,} users (seed {record['seed']}); load average {record['machine']['loadavg_before']}"
             f" before, {record['loadavg_after']} after; MAS: the tests' stand-in (tests/support/mas_stand_in.py)",
             f"{'':<34}{'seconds':>10}",
             f"{'window (report downtime_seconds)':<34}{_fmt(s['window_seconds'], '10.1f')}"]
    for phase in s["window_phases"] or []:
        lines.append(f"  {phase:<32}{_fmt(s['phase_seconds'].get(phase), '10.1f')}")
    lines += [
        f"{'  of which the import (its module)':<34}{_fmt(s['import_seconds'], '10.2f')}",
        f"{'  of which verify (its module)':<34}{_fmt(s['verify_seconds'], '10.2f')}",
        f"{'import alone (syn2mas command)':<34}{_fmt(alone.get('wall_seconds'), '10.2f')}",
        f"{'raw-copy floor':<34}{_fmt(s['floor_seconds'], '10.2f')}",
        f"{'predicted by the check run':<34}{_fmt(s['predicted_window_seconds'], '10.1f')}   "
        f"{json.dumps(s['predicted_window'])}; service seconds from {record['service_seconds_source']}",
        f"peak RSS MB: host side {_fmt(rss['host_peak_mb'], '.1f')} ({rss['host_peak_task']}), "
        f"import {_fmt(rss['import_mb'], '.1f')}; apart: ansible-playbook {_fmt(rss['controller_mb'], '.1f')}, "
        f"Synapse {_fmt(rss['synapse_mb'], '.1f')}, MAS stand-in {_fmt(rss['mas_stand_in_mb'], '.1f')}",
    ]
    return "\n".join(lines)


def check_runbook_targets(records: list) -> list:
    checks = []
    for r in sorted(records, key=lambda r: r["n_users"]):
        s, n = r["summary"], r["n_users"]
        if n == 1_000_000:
            checks.append((f"window <= {TARGET_WINDOW_S:g} s at 1,000,000", s["window_seconds"],
                           s["window_seconds"] is not None and s["window_seconds"] <= TARGET_WINDOW_S))
        checks.append((f"import <= {TARGET_IMPORT_OVER_FLOOR:g}x floor at {n:,}", s["import_over_floor"],
                       s["import_over_floor"] is not None and s["import_over_floor"] <= TARGET_IMPORT_OVER_FLOOR))
        checks.append((f"verify <= {TARGET_VERIFY_SHARE:g}x the import at {n:,}", s["verify_share"],
                       s["verify_share"] is not None and s["verify_share"] <= TARGET_VERIFY_SHARE))
        checks.append((f"peak RSS <= {TARGET_PEAK_RSS_MB:g} MB at {n:,}", s["peak_rss_mb"],
                       s["peak_rss_mb"] is not None and s["peak_rss_mb"] <= TARGET_PEAK_RSS_MB))
        if s["predicted_window_seconds"] and s["window_seconds"]:
            dev = s["predicted_window_seconds"] / s["window_seconds"] - 1
            checks.append((f"predicted within {TARGET_PREDICTION:.0%} of the window at {n:,}", f"{dev:+.0%}",
                           abs(dev) <= TARGET_PREDICTION))
    by_n = {r["n_users"]: r["summary"] for r in records}
    if 100_000 in by_n and 1_000_000 in by_n and by_n[100_000]["window_seconds"]:
        scale = by_n[1_000_000]["window_seconds"] / by_n[100_000]["window_seconds"]
        checks.append(("window 100k -> 1M <= 11x", f"{scale:.2f}x", scale <= 11))
    return checks


# ------------------------------------------------------------------------------------------
# One size
# ------------------------------------------------------------------------------------------

def measured_service_seconds(record: dict) -> float | None:
    """What only the real run spent of its window (its report's window_service_seconds: the window minus what the
    check run measured of it, its own window and verify's reads): the figure an operator gives the next check run
    (syn2mas_window_service_seconds) after a rehearsal."""
    seconds = record["summary"].get("window_service_seconds")
    return None if seconds is None else max(0.0, seconds)


def run_runbook_size(cluster, n_users: int, seed: int = 0, workdir: str | None = None, alone: bool = True,
                     keep: bool = False, service_seconds: float | None = None, service_source: str = "") -> dict:
    workdir = workdir or tempfile.mkdtemp(prefix="syn2mas-bench-runbook-")
    tag = f"n{n_users}_{os.getpid()}"
    synapse_db, mas_db, alone_db, scratch_db = (f"rb_{kind}_{tag}" for kind in ("synapse", "mas", "alone", "floor"))
    record = {"kind": "runbook", "n_users": n_users, "seed": seed,
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": bench.machine_info(cluster),
              "mas": "stand-in (tests/support/mas_stand_in.py), managed by roles/mas_service (command)",
              "peak_rss_scope": "processes the run starts on the host (ansible's modules); ansible-playbook, "
                                "Synapse and the MAS stand-in apart",
              "service_seconds_given": service_seconds,
              "service_seconds_source": service_source if service_seconds is not None else "the module's default"}
    hs = None
    try:
        record.update(bench.generate_synapse_db(cluster, synapse_db, n_users, seed))
        if alone:  # before Synapse runs: the import refuses a Synapse database with clients
            configs = bench.write_configs(cluster, workdir, synapse_db, alone_db)
            bench.create_mas_db(cluster, alone_db)
            log(f"N={n_users:,}: the import alone")
            record["import_alone"] = bench.run_import(*configs, workdir, dry_run=False)
            log(f"N={n_users:,}: import alone {record['import_alone']['wall_seconds']:.1f}s; the floor")
            columns = bench.written_columns(cluster, alone_db)
            sizes = bench.stage_floor_sources(cluster, alone_db, synapse_db, columns)
            record["floor"] = bench.run_floor(cluster, synapse_db, scratch_db, columns, sizes)
            log(f"N={n_users:,}: floor {record['floor']['total_seconds']:.1f}s")
            cluster.execute("DROP SCHEMA bench_floor CASCADE", synapse_db)  # Synapse's database as generated
            for name in (alone_db, scratch_db):
                cluster.drop_database(name)
        bench.create_mas_db(cluster, mas_db)
        hs = BenchHomeserver(cluster, workdir, synapse_db, mas_db)
        service_timeout = max(120, n_users // 2000)
        log(f"N={n_users:,}: starting MAS (stand-in) and Synapse")
        hs.start(timeout=service_timeout)
        inventory = hs.write_inventory(service_timeout, service_seconds)
        playbook_timeout = 1800 + n_users // 200
        record["check_run"] = run_playbook(cluster, hs, inventory, mas_db, check=True, timeout=playbook_timeout)
        record["real_run"] = run_playbook(cluster, hs, inventory, mas_db, check=False, timeout=playbook_timeout)
        record["loadavg_after"] = round(os.getloadavg()[0], 2)
        record["summary"] = summarize_runbook(record)
        for run in (record["check_run"], record["real_run"]):
            run.pop("report")  # the host's entry is kept; the rest is the same run's other hosts (none)
            for result in run["results"]:
                result["result"] = _slim(result["result"])
        return record
    finally:
        if hs is not None:
            hs.stop()
        if not keep:
            for name in (synapse_db, mas_db, alone_db, scratch_db):
                cluster.drop_database(name)


def _slim(result: dict) -> dict:
    """A module result as kept in the results file: its figures, not its per-row examples."""
    keep = ("changed", "dry_run", "duration_seconds", "stage_seconds", "verify_record_seconds",
            "predicted_window_seconds", "predicted_window", "ok", "verdict")
    out = {k: result[k] for k in keep if k in result}
    if "counts" in result:
        out["migrated"] = {k: v.get("migrated") for k, v in result["counts"].items()}
    if isinstance(result.get("data"), dict):
        out["data"] = {k: result["data"][k] for k in ("duration_seconds", "verdict", "ok") if k in result["data"]}
    return out


def main(argv=None) -> int:
    parser = bench.bench_arguments(__doc__, "10000")
    parser.add_argument("--no-alone", action="store_true", help="skip the import alone and the floor")
    parser.add_argument("--service-seconds", type=float, default=None,
                        help="syn2mas_window_service_seconds for every size's dry run (default: the module's "
                             "default for the first size, then the previous size's measured figure, as a rehearsal)")
    args = parser.parse_args(argv)
    sizes = args.sizes or [10_000]
    service, source = args.service_seconds, "--service-seconds"

    def measure(cluster, n: int) -> dict:
        nonlocal service, source
        with tempfile.TemporaryDirectory(prefix="syn2mas-bench-runbook-") as workdir:
            record = run_runbook_size(cluster, n, seed=args.seed, workdir=workdir, alone=not args.no_alone,
                                      keep=args.keep, service_seconds=service, service_source=source)
        if args.service_seconds is None and measured_service_seconds(record) is not None:
            service = measured_service_seconds(record)
            source = f"rehearsal: the run at {n:,} users (its window minus what its check run measured)"
        return record

    records = bench.run_sizes(sizes, "syn2mas-rb-", args.keep, args.results, measure, format_runbook_table)
    for line in bench.format_targets(check_runbook_targets(records), heading="targets (issue 20):"):
        print(line)
    bench.print_where(args)
    for record in records:
        print(summary_line(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
