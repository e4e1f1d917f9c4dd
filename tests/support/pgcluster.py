"""A throwaway PostgreSQL cluster for the tests, the demo and the benchmark.

initdb + pg_ctl on a private Unix socket directory and port, torn down by stop(). PostgreSQL
refuses to run as root, so under root the server runs as the `postgres` system user (created
by Debian's package) and the files live in a directory that user owns.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extras

from . import accounts
from .net import free_port

_db_counter = itertools.count()


def new_db_name(prefix: str) -> str:
    """A database name no other test of this run (nor another pytest-xdist worker) uses."""
    return f"{prefix}_{os.getpid()}_{next(_db_counter)}"


def find_bindir() -> str:
    """The newest /usr/lib/postgresql/<N>/bin holding initdb (PG_BINDIR overrides)."""
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL server found under /usr/lib/postgresql/*/bin: run scripts/setup.sh "
            "(it installs Debian's postgresql package)"
        )
    return os.path.dirname(candidates[-1])


@dataclass
class PgCluster:
    """A running cluster: connect with `dsn(dbname)` (superuser `postgres`, trust auth)."""

    basedir: str
    port: int
    bindir: str
    run_as: str | None
    superuser: str = "postgres"
    _started: bool = field(default=False, repr=False)
    _version: int | None = field(default=None, repr=False)

    @property
    def datadir(self) -> str:
        return os.path.join(self.basedir, "data")

    @property
    def sockdir(self) -> str:
        return self.basedir

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def dsn(self, dbname: str = "postgres", user: str | None = None, **extra: str) -> str:
        parts = {"host": self.sockdir, "port": str(self.port), "user": user or self.superuser,
                 "dbname": dbname, **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def uri(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        from urllib.parse import quote

        auth = quote(user or self.superuser, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@/{quote(dbname, safe='')}?host={quote(self.sockdir, safe='')}&port={self.port}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kw):
        conn = psycopg2.connect(self.dsn(dbname), **kw)
        conn.autocommit = autocommit
        psycopg2.extras.register_uuid(conn_or_curs=conn)
        return conn

    def execute(self, sql: str, dbname: str = "postgres", params=None) -> list[tuple]:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def start(self) -> "PgCluster":
        env = dict(os.environ, LC_ALL="C")
        subprocess.run(
            self._cmd(self.bin("initdb"), "-D", self.datadir, "-U", self.superuser,
                      "--locale=C", "-E", "UTF8", "-A", "trust", "--no-sync"),
            check=True, stdout=subprocess.DEVNULL, env=env,
        )
        opts = (f"-k {self.sockdir} -p {self.port} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=256MB")
        subprocess.run(
            self._cmd(self.bin("pg_ctl"), "-D", self.datadir, "-o", opts, "-w", "-t", "60",
                      "-l", os.path.join(self.basedir, "server.log"), "start"),
            check=True, stdout=subprocess.DEVNULL, env=env,
        )
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            subprocess.run(
                self._cmd(self.bin("pg_ctl"), "-D", self.datadir, "-m", "immediate", "-w", "stop"),
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self._started = False
        shutil.rmtree(self.basedir, ignore_errors=True)

    def create_database(self, name: str, template: str | None = None, owner: str | None = None) -> None:
        sql = f'CREATE DATABASE "{name}"'
        if template:
            sql += f' TEMPLATE "{template}"'
            # PostgreSQL 15's default (WAL_LOG) reads and logs every page of every relation; a Synapse schema
            # is hundreds of small relations, which copied as files cost a fraction of that (the checkpoint
            # FILE_COPY takes is cheap with fsync off, as on this cluster).
            if self._server_version() >= 150000:
                sql += " STRATEGY FILE_COPY"
        if owner:
            sql += f' OWNER "{owner}"'
        self.execute(sql)

    def _server_version(self) -> int:
        if self._version is None:
            self._version = int(self.execute("SHOW server_version_num")[0][0])
        return self._version

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_login_role(self, role: str, password: str) -> None:
        """A login role that must give its password over TCP (scram-sha-256), as on a real server;
        the superuser keeps trust on the socket. Re-creating an existing role resets its password."""
        from psycopg2 import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,))
        finally:
            conn.close()
        hba = os.path.join(self.datadir, "pg_hba.conf")
        line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        with open(hba) as handle:
            lines = handle.readlines()
        if line not in lines:
            # First match wins: ahead of initdb's `trust` lines.
            with open(hba, "w") as handle:
                handle.writelines([line, *lines])
            self.execute("SELECT pg_reload_conf()")

    def drop_role(self, role: str) -> None:
        self.execute(f'DROP ROLE IF EXISTS "{role}"')

    def give_database(self, dbname: str, owner: str) -> None:
        """Makes `owner` own the database and everything in its public schema (tables, sequences,
        views, types, functions), as when the application created its own schema."""
        self.execute(f'ALTER DATABASE "{dbname}" OWNER TO "{owner}"')
        self.execute(f"""DO $$
DECLARE r record;
BEGIN
  EXECUTE format('ALTER SCHEMA public OWNER TO %I', '{owner}');
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  LOOP
    EXECUTE format('ALTER %s %I OWNER TO %I',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                  WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.relname, '{owner}');
  END LOOP;
  -- Sequences not owned by a column (those follow their table).
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'S'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
  LOOP
    EXECUTE format('ALTER SEQUENCE %I OWNER TO %I', r.relname, '{owner}');
  END LOOP;
  FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
  LOOP
    EXECUTE format('ALTER TYPE %I OWNER TO %I', r.typname, '{owner}');
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND NOT EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.sig, '{owner}');
  END LOOP;
END $$;""", dbname)

    def tcp_uri(self, dbname: str, user: str, password: str, host: str = "127.0.0.1") -> str:
        """A postgresql:// URI over TCP with a password, as a remote client has it."""
        from urllib.parse import quote

        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{self.port}/{quote(dbname, safe='')}"

    def dump(self, dbname: str) -> str:
        """A plain-text pg_dump of schema and data, for before/after comparisons."""
        return subprocess.run(
            [self.bin("pg_dump"), "-h", self.sockdir, "-p", str(self.port), "-U", self.superuser,
             "--no-sync", "--restrict-key=syn2masTestDump", dbname],
            check=True, capture_output=True, text=True,
        ).stdout


def in_memory_parent(min_free: int = 4 << 30) -> str:
    """Where the test suite's clusters live: /dev/shm (memory) where it is a tmpfs with `min_free` bytes free, else
    /tmp; SYN2MAS_TEST_PG_PARENT overrides. The tests create and drop thousands of databases of about a thousand
    files each: on ext4, postgres spent half the fast tier's CPU finding free inodes among the recently deleted
    ones (perf: find_inode_bit, recently_deleted). What the tests prove does not depend on the disk; the
    benchmarks and the demo keep /tmp, as their figures are a disk's."""
    override = os.environ.get("SYN2MAS_TEST_PG_PARENT")
    if override:
        return override
    try:
        with open("/proc/mounts") as handle:
            tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in handle)
        stat = os.statvfs("/dev/shm")
    except OSError:
        return "/tmp"
    if tmpfs and stat.f_bavail * stat.f_frsize >= min_free and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return "/tmp"


def start_cluster(prefix: str = "syn2mas-pg-", parent: str = "/tmp") -> PgCluster:
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            pwd.getpwnam(run_as)
        except KeyError:
            accounts.run(["useradd", "--system", "--no-create-home", run_as], check=True)
    # Unix socket paths are limited to ~107 bytes: keep the directory short.
    basedir = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(basedir, 0o755)
    if run_as:
        pw = pwd.getpwnam(run_as)
        os.chown(basedir, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(basedir=basedir, port=free_port(), bindir=find_bindir(), run_as=run_as)
    try:
        return cluster.start()
    except Exception:
        cluster.stop()
        raise


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
