# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host offers for the database work: a Python with psycopg2 and PyYAML (Synapse's own, found
from the running Synapse, its systemd unit or Debian's package layout, or given), pg_dump and pg_restore
with their versions, and the running Synapse processes with the configuration paths they read.

Standard library only, and no import of the rest of the library: this runs first, on whatever
interpreter the inventory names (often Debian's bare /usr/bin/python3), to find the interpreter every
other module of the collection needs.

PRIVATE to the collection: the module syn2mas_runtime is its API.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import subprocess

# The oldest Python the library runs on.
MIN_PYTHON = (3, 8)
# Import name -> (name people know it by, Debian package).
LIBRARIES = {
    "psycopg2": ("psycopg2", "python3-psycopg2"),
    "yaml": ("PyYAML", "python3-yaml"),
    "ruamel.yaml": ("ruamel.yaml", "python3-ruamel.yaml"),
}
REQUIRED = ("psycopg2", "yaml")
DEBIAN_VENV_PYTHON = "/opt/venvs/matrix-synapse/bin/python"
DEFAULT_UNITS = ("matrix-synapse.service",)
PG_LIBDIR_GLOB = "/usr/lib/postgresql/*/bin"
PG_TOOLS = ("pg_dump", "pg_restore")

MAIN_APP = "synapse.app.homeserver"
# generic_worker, and the older worker app names Synapse still accepts as aliases of it.
WORKER_APPS = frozenset("synapse.app." + name for name in (
    "generic_worker", "appservice", "client_reader", "event_creator", "federation_reader", "federation_sender",
    "frontend_proxy", "media_repository", "pusher", "synchrotron", "user_dir"))
# The console scripts matrix-synapse installs.
CONSOLE_SCRIPTS = {"synapse_homeserver": MAIN_APP, "synapse_worker": "synapse.app.generic_worker"}
# Python's own options that take a value (so the value is not mistaken for the script).
_PYTHON_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")

# Run by each candidate: its version, which libraries import and the matrix-synapse it has installed (the
# Synapse it runs, whose version decides how Synapse delegates to MAS). Kept valid on old Pythons (even 2.7),
# so a candidate too old still answers and is reported as such.
PROBE_SCRIPT = r"""
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:
        found[name] = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    else:
        found[name] = {"ok": True, "version": str(getattr(mod, "__version__", "")).split(" ")[0]}
try:
    import importlib.metadata
    synapse = importlib.metadata.version("matrix-synapse")
except Exception:
    synapse = None
sys.stdout.write(json.dumps({"version": list(sys.version_info[:3]), "executable": sys.executable,
                             "libraries": found, "synapse": synapse}))
"""
PROBE_TIMEOUT = 60


def library_names(names) -> str:
    """'psycopg2 and PyYAML' for ['psycopg2', 'yaml']."""
    shown = [LIBRARIES.get(n, (n, None))[0] for n in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


# -- interpreters -------------------------------------------------------------------------------

def probe_interpreter(path: str, required=REQUIRED) -> dict:
    """Runs `path` with PROBE_SCRIPT; returns what it is and whether it can do the database work."""
    wanted = list(dict.fromkeys(list(required) + list(LIBRARIES)))
    info = {"path": path, "exists": False, "version": None, "libraries": {}, "synapse_version": None, "usable": False,
            "problems": []}
    executable = path if os.sep in path else shutil.which(path)
    if not executable or not os.path.exists(executable):
        info["problems"].append("does not exist" if os.sep in path else "not found on PATH")
        return info
    info["exists"] = True
    if not os.access(executable, os.X_OK) or os.path.isdir(executable):
        info["problems"].append("not executable")
        return info
    try:
        # cwd=/ so that no file in the caller's directory shadows a library.
        proc = subprocess.run([executable, "-c", PROBE_SCRIPT] + wanted, cwd="/", capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        info["problems"].append(f"cannot run it: {exc}")
        return info
    try:
        answer = json.loads(proc.stdout)
        version = tuple(int(part) for part in answer["version"])
        libraries = dict(answer["libraries"])
    except (ValueError, KeyError, TypeError):
        error = (proc.stderr or proc.stdout or "").strip().splitlines()
        info["problems"].append(f"not a working Python (exit {proc.returncode}: {error[-1] if error else 'no output'})")
        return info
    info["version"] = ".".join(str(part) for part in version)
    info["synapse_version"] = answer.get("synapse") or None
    for name in wanted:
        lib = libraries.get(name) or {}
        info["libraries"][name] = lib.get("version", "") if lib.get("ok") else None
    if version < MIN_PYTHON:
        info["problems"].append(f"Python {info['version']}, older than {'.'.join(map(str, MIN_PYTHON))}")
    for name in required:
        if info["libraries"].get(name) is None:
            info["problems"].append(f"no {LIBRARIES.get(name, (name,))[0]}")
    info["usable"] = not info["problems"]
    return info


def describe_candidate(candidate: dict) -> str:
    what = f"{candidate['path']} ({candidate['source']}"
    if candidate.get("version"):
        what += f", Python {candidate['version']}"
    return what + ": " + ", ".join(candidate["problems"]) + ")"


# -- Synapse processes --------------------------------------------------------------------------

def synapse_app(argv: list):
    """(app, index of the app's first argument) when `argv` runs Synapse's main process or a worker,
    else None. `argv[0]` is the interpreter, as the kernel and systemd give it."""
    if len(argv) < 2:
        return None
    args = iter(enumerate(argv[1:], 1))
    for index, arg in args:
        if arg == "-m":
            following = next(args, None)
            return _known_app(following[1], following[0] + 1) if following else None
        if arg.startswith("-m"):
            return _known_app(arg[2:], index + 1)
        if arg in ("-c", "-"):
            return None
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            next(args, None)
            continue
        if arg.startswith("-"):
            continue
        # The script: a console script, or Synapse's app module run as a file.
        base = os.path.basename(arg)
        if base in CONSOLE_SCRIPTS:
            return CONSOLE_SCRIPTS[base], index + 1
        if arg.endswith(os.path.join("synapse", "app", "homeserver.py")):
            return MAIN_APP, index + 1
        if arg.endswith(os.path.join("synapse", "app", "generic_worker.py")):
            return "synapse.app.generic_worker", index + 1
        return None
    return None


def _known_app(module: str, first_arg: int):
    if module == MAIN_APP or module in WORKER_APPS:
        return module, first_arg
    return None


def role_of(app: str) -> str:
    return "main" if app == MAIN_APP else "worker"


def config_args(args: list) -> list:
    """The values of Synapse's -c/--config-path arguments, in order, as given."""
    found = []
    args = iter(args)
    for arg in args:
        if arg in ("-c", "--config-path"):
            value = next(args, None)
        elif arg.startswith("--config-path="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-c") and not arg.startswith("--"):
            value = arg[2:]
        else:
            continue
        if value:
            found.append(value)
    return found


def resolve_executable(name: str, cwd, path_env) -> str | None:
    """Where `name` (argv[0]) points: relative to the process's directory when it holds a slash, else
    looked up in the process's PATH; the path is not resolved further (a venv's python is a symlink)."""
    if os.path.isabs(name):
        return name
    if os.sep in name:
        return os.path.normpath(os.path.join(cwd, name)) if cwd else None
    if path_env is None:
        return None  # another user's process, seen without privileges: its PATH is unknown
    for directory in path_env.split(os.pathsep):
        if not os.path.isabs(directory or "."):
            if not cwd:
                continue
            directory = os.path.join(cwd, directory or ".")
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.normpath(candidate)
    return None


def _read_proc(pid: str, name: str) -> bytes | None:
    try:
        with open(os.path.join("/proc", pid, name), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _process_user(pid: str):
    status = _read_proc(pid, "status") or b""
    match = re.search(rb"^Uid:\s+\d+\s+(\d+)", status, re.M)  # the effective uid
    if not match:
        return None, None
    uid = int(match.group(1))
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, str(uid)


def synapse_processes() -> list:
    """Every running Synapse main process and worker this user can see, by pid."""
    found = []
    own = {str(os.getpid())}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        if pid in own:
            continue
        raw = _read_proc(pid, "cmdline")
        if not raw:
            continue  # a kernel thread, a zombie, or gone
        argv = [part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]
        app = synapse_app(argv)
        if not app:
            continue
        try:
            cwd = os.readlink(os.path.join("/proc", pid, "cwd"))
        except OSError:
            cwd = None  # another user's process, seen without privileges
        path_env = None
        environ = _read_proc(pid, "environ")
        if environ is not None:
            for entry in environ.split(b"\0"):
                if entry.startswith(b"PATH="):
                    path_env = entry[5:].decode("utf-8", "surrogateescape")
        uid, user = _process_user(pid)
        given = config_args(argv[app[1]:])
        found.append({
            "pid": int(pid), "user": user, "uid": uid, "role": role_of(app[0]), "app": app[0],
            "interpreter": resolve_executable(argv[0], cwd, path_env), "interpreter_as_given": argv[0],
            "cwd": cwd, "config_paths": [os.path.normpath(os.path.join(cwd, p)) if cwd else p for p in given],
        })
    return found


def _covers(process: dict, configs: list) -> bool:
    """Whether the process reads one of `configs` (as a file, or from a directory it reads)."""
    read = [os.path.realpath(p) for p in process["config_paths"]]
    for config in configs:
        config = os.path.realpath(config)
        for path in read:
            if config == path or config.startswith(path.rstrip(os.sep) + os.sep):
                return True
    return False


def rank_processes(processes: list, synapse_config=()) -> list:
    """The Synapse reading the operator's configuration first, then main processes before workers."""
    configs = list(synapse_config or ())
    return sorted(processes, key=lambda p: (not (configs and _covers(p, configs)), p["role"] != "main", p["pid"]))


# -- systemd units ------------------------------------------------------------------------------

def parse_exec_start(text: str) -> list:
    """The argv of each command in `systemctl show -p ExecStart --value` output, e.g.
    `{ path=/usr/bin/python3 ; argv[]=/usr/bin/python3 -m x ; ignore_errors=no ; ... }`."""
    return [argv.split() for argv in re.findall(r"argv\[\]=(.*?) ;", text)]


def shebang_interpreter(path: str) -> str | None:
    """The interpreter a script names on its #! line (`/usr/bin/env python3` gives `python3`)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        return words[1]
    return words[0]


def unit_runtime(unit: str, systemctl: str) -> dict:
    """The interpreter and configuration paths of a systemd unit's ExecStart."""
    info = {"unit": unit, "interpreter": None, "config_paths": [], "error": None}
    try:
        proc = subprocess.run([systemctl, "show", "-p", "ExecStart", "--value", unit], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        info["error"] = f"systemctl show failed: {exc}"
        return info
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        info["error"] = f"systemctl show failed: {lines[0] if lines else f'exit {proc.returncode}'}"
        return info
    for argv in parse_exec_start(proc.stdout):
        app = synapse_app(argv)
        if app is None and argv and shebang_interpreter(argv[0]):
            # ExecStart runs a console script (synapse_homeserver): its #! line names the interpreter.
            argv = [shebang_interpreter(argv[0])] + argv
            app = synapse_app(argv)
        if app:
            info["interpreter"] = argv[0]
            info["config_paths"] = config_args(argv[app[1]:])
            return info
    info["error"] = "no ExecStart that runs Synapse" if proc.stdout.strip() else "no ExecStart (is the unit installed?)"
    return info


# -- PostgreSQL client programs -----------------------------------------------------------------

def postgres_major(version_num: int) -> str:
    """The major version of a `server_version_num`: 150014 -> '15', 90624 -> '9.6'."""
    version_num = int(version_num)
    if version_num >= 100000:
        return str(version_num // 10000)
    return f"{version_num // 10000}.{version_num // 100 % 100}"


def parse_pg_version(text: str) -> tuple:
    """(version, major) from `pg_dump --version`: 'pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)'
    gives ('15.14', '15'); '... 9.6.24' gives ('9.6.24', '9.6'); '... 17beta1' gives ('17beta1', '17')."""
    match = re.search(r"\(PostgreSQL\)\s+((\d+)(?:\.(\d+))?(?:\.\d+)?\S*)", text or "")
    if not match:
        return None, None
    first = int(match.group(2))
    if first >= 10 or match.group(3) is None:
        return match.group(1), str(first)
    return match.group(1), f"{first}.{match.group(3)}"


def _version_key(directory: str) -> tuple:
    name = os.path.basename(os.path.dirname(directory))
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def find_pg_tool(name: str, bindir: str | None = None, libdir_glob: str = PG_LIBDIR_GLOB) -> dict:
    """Where `name` is (`bindir`, else PATH, else the newest PostgreSQL's bin directory) and its version."""
    info = {"path": None, "found_in": None, "version": None, "major": None, "error": None}
    if bindir:
        path = os.path.join(bindir, name)
        found_in = "pg_bindir"
        if not os.path.isfile(path):
            info["error"] = f"{name} is not in pg_bindir {bindir}"
            return info
    else:
        path, found_in = shutil.which(name), "PATH"
        if not path:
            newest = sorted(glob.glob(libdir_glob), key=_version_key)
            path = next((os.path.join(d, name) for d in reversed(newest) if os.path.isfile(os.path.join(d, name))), None)
            found_in = libdir_glob
        if not path:
            info["error"] = f"{name} was found neither on PATH nor in {libdir_glob}"
            return info
    info.update(path=path, found_in=found_in)
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        info["error"] = f"{path} --version failed: {exc}"
        return info
    info["version"], info["major"] = parse_pg_version(proc.stdout)
    if proc.returncode != 0 or info["version"] is None:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        info["error"] = f"{path} --version did not tell its version: {lines[-1] if lines else f'exit {proc.returncode}'}"
    return info


# -- everything together ------------------------------------------------------------------------

def discover(python=(), discover_more: bool = True, units=DEFAULT_UNITS, synapse_config=(), pg_bindir=None,
             required=REQUIRED, module_python: str | None = None, debian_python: str = DEBIAN_VENV_PYTHON,
             synapse_python: str | None = None) -> dict:
    """Finds and tests the candidate interpreters in order (the given ones; the running Synapse's; the
    systemd units'; Debian's package layout; `module_python`), chooses the first that can do the database
    work, finds pg_dump and pg_restore, and says what is missing and the ways out. The Synapse version is the
    one `synapse_python` (Synapse's own Python, when given) has installed, else the chosen interpreter's."""
    required = list(required)
    # The processes and units are reported in any case: they tell which configuration Synapse reads.
    processes = rank_processes(synapse_processes(), synapse_config)
    systemctl = shutil.which("systemctl")
    unit_info = [unit_runtime(unit, systemctl) for unit in (units if systemctl else ())]
    candidates = [(p, "given") for p in python]
    if discover_more:
        for proc in processes:
            if proc["interpreter"]:
                candidates.append((proc["interpreter"], f"Synapse process {proc['pid']} ({proc['role']})"))
        for info in unit_info:
            if info["interpreter"]:
                candidates.append((info["interpreter"], f"systemd unit {info['unit']}"))
        candidates.append((debian_python, "Debian package layout"))
        if module_python:
            candidates.append((module_python, "this module's interpreter"))
    tested, seen, chosen = [], set(), None
    for path, source in candidates:
        key = os.path.normpath(path)
        if key in seen:
            continue
        seen.add(key)
        info = probe_interpreter(path, required)
        info["source"] = source
        tested.append(info)
        if info["usable"] and chosen is None:
            chosen = info
    result = {
        "python": chosen["path"] if chosen else None,
        "synapse_version": _synapse_version(synapse_python, tested, chosen),
        "candidates": tested,
        "synapse_processes": processes,
        "synapse_units": unit_info,
        "pg_bindir": None,
        "problems": {"python": None},
    }
    if chosen is None:
        result["problems"]["python"] = python_problem(tested, required, discover_more)
    for tool in PG_TOOLS:
        result[tool] = find_pg_tool(tool, pg_bindir)
        result["problems"][tool] = pg_tool_problem(tool, result[tool]) if result[tool]["error"] else None
    dirs = {os.path.dirname(result[t]["path"]) for t in PG_TOOLS if result[t]["path"]}
    if len(dirs) == 1 and all(result[t]["path"] for t in PG_TOOLS):
        result["pg_bindir"] = dirs.pop()
    result["missing"] = [message for message in result["problems"].values() if message]
    return result


def _synapse_version(synapse_python, tested: list, chosen):
    """The matrix-synapse release of `synapse_python` (probed once: it may be a candidate already), else of the
    chosen interpreter."""
    if not synapse_python:
        return chosen["synapse_version"] if chosen else None
    for info in tested:
        if os.path.normpath(info["path"]) == os.path.normpath(synapse_python):
            return info["synapse_version"]
    return probe_interpreter(synapse_python, ())["synapse_version"]


def python_problem(tested: list, required: list, discovered: bool) -> str:
    libraries = library_names(required)
    packages = " ".join(LIBRARIES[n][1] for n in required if LIBRARIES.get(n, (None, None))[1])
    tried = "; ".join(describe_candidate(c) for c in tested) or "no candidate"
    minimum = ".".join(map(str, MIN_PYTHON))
    if discovered:
        head = f"no Python {minimum}+ with {libraries} on this host: tried {tried}. Set syn2mas_python"
    else:
        head = (f"the given Python cannot do the database work (it needs Python {minimum}+ with {libraries}): "
                f"tried {tried}. Leave syn2mas_python unset to use the interpreter of the running Synapse, or set it")
    return (f"{head} (the python option) to an interpreter that has them, for example Synapse's own virtualenv "
            f"({DEBIAN_VENV_PYTHON} with Debian's matrix-synapse package); or install them for Debian's "
            f"/usr/bin/python3: apt-get install {packages}")


def pg_tool_problem(tool: str, info: dict) -> str:
    return (f"{info['error']}: install PostgreSQL's client programs (Debian: postgresql-client, or "
            f"postgresql-client-NN for server version NN) or set syn2mas_pg_bindir (the pg_bindir option) to "
            f"the directory that holds {tool}")
