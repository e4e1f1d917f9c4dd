# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `syn2mas` command: the documented flags of the syn2mas tool, over this collection's library.

    syn2mas --command advisor --synapseConfigFile homeserver.yaml [--masConfigFile config.yaml]
    syn2mas --command migrate --synapseConfigFile homeserver.yaml --masConfigFile config.yaml
            [--dryRun [true|false]] [--upstreamProviderMapping PROVIDER:ID]...
    syn2mas --command verify --synapseConfigFile homeserver.yaml --masConfigFile config.yaml
    syn2mas --version

A run that fails says why in one line on stderr (a traceback only with --verbose); with --output
json it also prints {"ok": false, "command": ..., "error": ..., "exit_code": N} on stdout, so a
script reading stdout always gets JSON. Passwords are masked in everything it prints. INT, TERM
and HUP stop a run with one line, `syn2mas: interrupted; MAS left as it was`, and exit code 130.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback

from . import __version__
from . import errors
from .db import first_line, parsed
from .errors import Interrupted, Syn2masError, redact, redact_data

EXIT_FAILURE = 1
EXIT_USAGE = 2  # as argparse
EXIT_INTERRUPTED = 130  # INT, TERM and HUP alike
INTERRUPTED_MESSAGE = "interrupted; MAS left as it was"
HANDLED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
COMMANDS = ("advisor", "migrate", "verify")


class UsageError(Exception):
    """The command line is wrong (argparse's message)."""


class MissingOption(Syn2masError):
    """An option the command needs is not on the command line: a usage error (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is raised for main() to report (also as JSON) instead of
    printed and exited on the spot, and that it keeps the names of its options (`option_names`)."""

    def __init__(self, *args, **kwargs):
        self.option_names = []  # before argparse's __init__, which adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.option_names.extend(action.option_strings)
        return action

    def error(self, message):
        raise UsageError(message)


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="syn2mas",
        description="Move a Synapse homeserver's users, passwords, SSO links, devices and tokens into "
                    "Matrix Authentication Service (MAS). Run the advisor first, then migrate with --dryRun, "
                    "then migrate for real while Synapse is stopped.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="show the version of the syn2mas command (the matrix.syn2mas collection's) and exit")
    parser.add_argument("command_positional", nargs="?", choices=COMMANDS, metavar="COMMAND",
                        help="advisor, migrate or verify (same as --command)")
    parser.add_argument("--command", choices=COMMANDS, help="advisor, migrate or verify (after the import: "
                        "MAS holds exactly what Synapse's database says it must; exit 12 when not)")
    parser.add_argument("--synapseConfigFile", action="append", default=[], metavar="FILE",
                        help="Synapse's homeserver.yaml or a config directory (its *.yaml files, sorted); repeat for "
                             "split configs (merged as Synapse merges them)")
    parser.add_argument("--masConfigFile", action="append", default=[], metavar="FILE",
                        help="MAS's config.yaml; repeat for split configs")
    parser.add_argument("--dryRun", nargs="?", const=True, default=False, type=_bool, metavar="true|false",
                        help="migrate: load everything into MAS, validate it, then roll it back (default false)")
    parser.add_argument("--upstreamProviderMapping", action="append", default=[], metavar="PROVIDER:ID",
                        help="map a Synapse auth_provider (e.g. oidc-google) to a MAS upstream provider id "
                             "(ULID or UUID); repeatable; overrides synapse_idp_id from MAS's config")
    parser.add_argument("--skipUnmappedProviders", nargs="?", const=True, default=False, type=_bool,
                        metavar="true|false",
                        help="migrate: leave SSO links of unmapped providers behind instead of failing")
    parser.add_argument("--synapseDatabaseUri", metavar="URI",
                        help="PostgreSQL URI of Synapse's database, instead of homeserver.yaml's database section")
    parser.add_argument("--masDatabaseUri", metavar="URI",
                        help="PostgreSQL URI of MAS's database, instead of config.yaml's database section")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--recomputeFromSynapse", nargs="?", const=True, default=False, type=_bool,
                        metavar="true|false",
                        help="verify: recompute every row from Synapse even while Synapse is as the import read it "
                             "(by default MAS is then compared with the digests the import took of what it wrote)")
    parser.add_argument("--verbose", action="store_true",
                        help="advisor: also show INFO findings; any command: a traceback for an unexpected error")
    parser.add_argument("--forRealImport", nargs="?", const=True, default=False, type=_bool, metavar="true|false",
                        help="advisor: judge as right before the real import (a running Synapse is then an ERROR)")
    parser.add_argument("--reverseProxyConfig", default="", metavar="FILE",
                        help="advisor: the nginx file with the homeserver's server block (are the compat routes there?)")
    parser.add_argument("--publicUrl", default="", metavar="URL",
                        help="advisor: the homeserver's public URL, probed for /login and /refresh reaching MAS")
    parser.add_argument("--masUrl", default="", metavar="URL",
                        help="advisor: MAS as this host reaches it: asked whether it answers (/health, its "
                             "issuer, its compatibility login), and compared with the probe's answers")
    return parser


class Progress:
    """Per-stage progress on stderr: a live line on a terminal; otherwise (a log, a pipe, a job runner)
    one line per stage when it ends, and a line with the rows so far every `every` seconds of a stage
    still running, for an operator watching a long window. Never on stdout (--output json stays JSON)."""

    def __init__(self, stream, every: float = 10.0, clock=time.monotonic):
        self.stream = stream
        self.live = stream.isatty()
        self.every = every
        self.clock = clock
        self._last = 0.0
        self._logged = None  # (stage, when) of the last line off a terminal

    def __call__(self, event: dict) -> None:
        stage = event.get("stage", "")
        if event.get("message") is not None:
            text = (f"rebuilding indexes and constraints: {event['message']} "
                    f"({event.get('rows', 0) + 1}/{event.get('total', 0)})")
            if self.live:
                self._line(text)
            elif self._due(stage):
                self._line(text, final=True)
            return
        rows, total, elapsed = event.get("rows", 0), event.get("total", 0), event.get("elapsed", 0.0)
        rate = rows / elapsed if elapsed > 0 else 0.0
        if event.get("done"):
            self._line(f"{stage}: {rows:,} rows in {elapsed:.1f}s ({rate:,.0f} rows/s)", final=True)
            self._logged = None
            return
        if not self.live:
            if self._due(stage):
                of_total = f" ({100 * rows / total:.0f}% of ~{total:,})" if total else ""
                self._line(f"{stage}: {rows:,} rows in {elapsed:.1f}s so far{of_total}, {rate:,.0f} rows/s",
                           final=True)
            return
        percent = f" ({100 * rows / total:.0f}%)" if total else ""
        of_total = f"/{total:,}" if total else ""
        now = self.clock()
        if now - self._last < 0.2:
            return
        self._last = now
        eta = f", ETA {(total - rows) / rate:.0f}s" if rate > 0 and total and total > rows else ""
        self._line(f"{stage}: {rows:,}{of_total} rows{percent}, {rate:,.0f} rows/s{eta}")

    def _due(self, stage: str) -> bool:
        """Off a terminal: whether `every` seconds passed since the stage started or last said so."""
        now = self.clock()
        if self._logged is None or self._logged[0] != stage:
            self._logged = (stage, now)
            return False
        if now - self._logged[1] < self.every:
            return False
        self._logged = (stage, now)
        return True

    def _line(self, text: str, final: bool = False) -> None:
        if self.live:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()


def format_import_summary(result: dict) -> str:
    lines = []
    if result.get("already_imported"):
        previous = result.get("previous_import") or {}
        lines.append(f"MAS already holds the import of {result['server_name']} made on "
                     f"{previous.get('imported_at', 'an earlier run')}: nothing to do.")
    else:
        what = "Dry run (rolled back, nothing kept)" if result.get("dry_run") else "Import committed"
        lines.append(f"{what}: {result['server_name']} into MAS {result['mas_schema']['release']} "
                     f"in {result.get('duration_seconds', 0):.1f}s")
    counts = result.get("counts") or {}
    if counts:
        width = max(len(name) for name in counts)
        lines.append(f"  {'stage'.ljust(width)}  {'migrated':>10}  {'skipped':>8}")
        for name, entry in counts.items():
            lines.append(f"  {name.ljust(width)}  {entry['migrated']:>10,}  {entry['skipped']:>8,}")
            for reason, info in entry.get("skipped_reasons", {}).items():
                examples = ", ".join(info.get("examples", []))
                lines.append(f"      skipped {info['count']:,}: {reason}" + (f" (e.g. {examples})" if examples else ""))
            for label, n in entry.get("fixed", {}).items():
                examples = ", ".join((entry.get("fixed_examples") or {}).get(label, []))
                lines.append(f"      {n:,}: {label}" + (f" (e.g. {examples})" if examples else ""))
    for warning in result.get("warnings", []):
        lines.append(f"WARN {warning}")
    return "\n".join(lines)


def _as_json(result: dict) -> str:
    """A result as JSON, its strings redacted before they are encoded (a secret holding `"` or `\\`
    no longer reads the same once escaped)."""
    return json.dumps(redact_data(result), indent=2, sort_keys=True, default=str)


def run_migrate(args, out, err) -> int:
    from .migration.importer import ImportOptions, run_import

    if not args.synapseConfigFile:
        raise MissingOption("--synapseConfigFile is required")
    if not args.masConfigFile and not args.masDatabaseUri:
        raise MissingOption("--masConfigFile is required for migrate")
    result = run_import(ImportOptions(
        synapse_config=args.synapseConfigFile, mas_config=args.masConfigFile,
        synapse_database_uri=args.synapseDatabaseUri, mas_database_uri=args.masDatabaseUri,
        upstream_provider_mapping=args.upstreamProviderMapping,
        skip_unmapped_providers=args.skipUnmappedProviders, dry_run=args.dryRun,
        progress=Progress(err),  # on stderr: --output json keeps stdout to the result
    ))
    if args.output == "json":
        out.write(_as_json(result) + "\n")
    else:
        out.write(redact(format_import_summary(result)) + "\n")
    if result.get("synapse_changed_since_import"):
        # MAS holds an older Synapse: not a success to build on (the runbook refuses it too).
        err.write("syn2mas: error: " + redact("MAS holds an import of Synapse that Synapse has changed since: "
                                              + "; ".join(result.get("synapse_changes") or [])) + "\n")
        return EXIT_FAILURE
    return 0


def run_verify(args, out, err) -> int:
    from .migration import verify

    if not args.synapseConfigFile:
        raise MissingOption("--synapseConfigFile is required")
    if not args.masConfigFile and not args.masDatabaseUri:
        raise MissingOption("--masConfigFile is required for verify")
    result = verify.run_verify(verify.VerifyOptions(
        synapse_config=args.synapseConfigFile, mas_config=args.masConfigFile,
        synapse_database_uri=args.synapseDatabaseUri, mas_database_uri=args.masDatabaseUri,
        recompute=args.recomputeFromSynapse,
    ))
    if args.output == "json":
        out.write(_as_json(result) + "\n")
    else:
        out.write(redact(verify.format_human(result)))
    return result["exit_code"]


def run_advisor(args, out, err) -> int:
    from . import advisor

    if not args.synapseConfigFile:
        raise MissingOption("--synapseConfigFile is required")
    result = advisor.run_advisor(advisor.AdvisorOptions(
        synapse_config=args.synapseConfigFile, mas_config=args.masConfigFile,
        synapse_database_uri=args.synapseDatabaseUri, mas_database_uri=args.masDatabaseUri,
        upstream_provider_mapping=args.upstreamProviderMapping, for_real_import=args.forRealImport,
        reverse_proxy_config=args.reverseProxyConfig, public_url=args.publicUrl, mas_url=args.masUrl,
    ))
    if args.output == "json":
        out.write(_as_json(result) + "\n")
    else:
        out.write(redact(advisor.format_human(result, verbose=args.verbose)))
    return advisor.exit_code(result)


def _wants_json(argv) -> bool:
    """Whether the command line asks for --output json, read even from a command line that does not parse."""
    probe = _Parser(add_help=False)
    probe.add_argument("--output")
    try:
        known = probe.parse_known_args(argv)[0]
    except UsageError:
        return False
    return known.output == "json"


def _remember_command_line_secrets(args) -> None:
    """The URIs' passwords remembered (by parsing them), so that redact() masks them in whatever
    is printed, even before the run gets to parse them itself."""
    for uri in (getattr(args, "synapseDatabaseUri", None), getattr(args, "masDatabaseUri", None)):
        if uri:
            try:
                parsed({"dsn": uri})
            except Exception:  # unparsable, or no psycopg2: its password was remembered first
                pass


def _fail(out, err, as_json: bool, command, message: str, exit_code: int) -> int:
    """Reports a failed run: one line on stderr, and a JSON object on stdout with --output json."""
    message = redact(message)
    err.write(f"syn2mas: error: {message}\n")
    if as_json:
        out.write(json.dumps({"ok": False, "command": command, "error": message, "exit_code": exit_code},
                             indent=2, sort_keys=True) + "\n")
    return exit_code


def _on_signal(signum, _frame):
    errors.request_interrupt(signum)


def _install_signal_handlers() -> dict:
    previous = {}
    for name in HANDLED_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            try:
                previous[number] = signal.signal(number, _on_signal)
            except ValueError:  # not the main thread (main() called from a test's thread)
                pass
    return previous


def main(argv=None, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else list(argv)
    errors.reset_interrupts()
    previous = _install_signal_handlers()
    try:
        return _main(argv, out, err)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _main(argv, out, err) -> int:
    parser = build_parser()
    as_json = _wants_json(argv)
    args, command = None, None
    try:
        try:
            args = parser.parse_args(argv)
            command = args.command or args.command_positional
            if command is None:
                parser.error("--command advisor|migrate|verify is required")
        except UsageError as exc:
            parser.print_usage(err)
            # `--colour blue`: argparse blames `blue` (taken for the COMMAND); the unknown option is the cause.
            unknown = [name for name in (a.split("=", 1)[0] for a in argv if a.startswith("--"))
                       if not any(option.startswith(name) for option in parser.option_names)]
            message = f"unrecognized arguments: {' '.join(unknown)}" if unknown else str(exc)
            return _fail(out, err, as_json, command, message, EXIT_USAGE)
        _remember_command_line_secrets(args)
        try:
            if command == "migrate":
                return run_migrate(args, out, err)
            if command == "verify":
                return run_verify(args, out, err)
            return run_advisor(args, out, err)
        except Syn2masError as exc:
            return _fail(out, err, as_json, command, str(exc),
                         EXIT_USAGE if isinstance(exc, MissingOption) else EXIT_FAILURE)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: one line, its traceback with --verbose, and still JSON
            if args is not None and args.verbose:
                err.write(redact(traceback.format_exc()))
            return _fail(out, err, as_json, command, f"unexpected {type(exc).__name__}: {first_line(exc)} "
                         "(run with --verbose for the traceback)", EXIT_FAILURE)
    except (Interrupted, KeyboardInterrupt):
        # No more signals from here: the line below is the run's last word.
        errors.defer_interrupts()
        err.write(f"syn2mas: {INTERRUPTED_MESSAGE}\n")
        if as_json:
            out.write(json.dumps({"ok": False, "command": command, "error": INTERRUPTED_MESSAGE,
                                  "exit_code": EXIT_INTERRUPTED}, indent=2, sort_keys=True) + "\n")
        return EXIT_INTERRUPTED
