# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The advisor's result for people and programs: exit codes as mas-cli has them, and one line per finding."""

from __future__ import annotations

from .registry import ERROR, INFO, WARN, plural

EXIT_CLEAN, EXIT_ERRORS, EXIT_WARNINGS = 0, 10, 11
# When the module fails: on any ERROR, on any ERROR or WARN, or never (a gate of its own reads the result).
FAIL_ON = ("error", "warning", "never")


def exit_code(result: dict) -> int:
    """mas-cli's convention: 10 when there are errors, 11 when there are warnings only, else 0."""
    summary = result.get("summary", {})
    if summary.get("errors"):
        return EXIT_ERRORS
    if summary.get("warnings"):
        return EXIT_WARNINGS
    return EXIT_CLEAN


def format_finding(finding: dict) -> str:
    line = f"{finding['severity']} {finding['check']}: {finding['message']}"
    if finding.get("where"):
        line += f" [{finding['where']}]"
    if finding.get("remedy"):
        line += f" -> {finding['remedy']}"
    return line


def finding_line(finding: dict) -> str:
    """A finding as one line without its severity: `check: message [where] -> remedy`. It is how the
    module lists errors and warnings, and the text the import refuses with."""
    return format_finding(finding).split(" ", 1)[1]


def module_result(result: dict) -> dict:
    """The syn2mas_advisor module's result: the findings, with the ERROR and WARN ones as lines."""
    return {
        "changed": False, "findings": result["findings"], "summary": result["summary"],
        "errors": [finding_line(f) for f in result["findings"] if f["severity"] == ERROR],
        "warnings_found": [finding_line(f) for f in result["findings"] if f["severity"] == WARN],
        "exit_code": exit_code(result),
    }


def gate(result: dict, fail_on: str) -> str | None:
    """Why `fail_on` fails a module_result (None when it does not)."""
    errors, warnings = result["errors"], result["warnings_found"]
    if not ((fail_on in ("error", "warning") and errors) or (fail_on == "warning" and warnings)):
        return None
    counted = f"{len(errors)} error(s)" + (f" and {len(warnings)} warning(s)" if fail_on == "warning" else "")
    return f"the migration advisor found {counted} (fail_on={fail_on}); first: {(errors or warnings)[0]}"


def format_human(result: dict, verbose: bool = False) -> str:
    """One line per finding (INFO only when verbose), then a summary line; ends with a newline."""
    lines = [format_finding(f) for f in result["findings"] if verbose or f["severity"] != INFO]
    summary = result["summary"]
    text = (f"Summary: {plural(summary['errors'], 'error')}, {plural(summary['warnings'], 'warning')}, "
            f"{summary['info']:,} info" + ("" if verbose or not summary["info"] else " (shown with --verbose)"))
    reasons: dict = {}
    for item in summary.get("not_run", []):
        reasons.setdefault(item["reason"], []).append(item["check"])
    for reason, checks in reasons.items():
        text += f"; {plural(len(checks), 'check')} not run ({reason})"
    code = exit_code(result)
    text += ("; the migration is blocked until the errors are fixed" if code == EXIT_ERRORS else
             "; read the warnings and act on them before migrating" if code == EXIT_WARNINGS else
             "; nothing blocks the migration")
    lines.append(text)
    return "\n".join(lines) + "\n"


__all__ = ["ERROR", "EXIT_CLEAN", "EXIT_ERRORS", "EXIT_WARNINGS", "INFO", "WARN", "exit_code", "finding_line",
           "format_finding", "format_human"]
