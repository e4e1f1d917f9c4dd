"""The benchmark's machinery at a tiny size: it runs end to end and reports what the README shows.

No timing is asserted: only that the table, the results file and the ratios are produced, that
the import and the dry run carried the rows the floor copied, and that the advisor found no error.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, ROOT)

from bench import run as bench  # noqa: E402

N_USERS = 300


def test_bench_runs_at_a_tiny_size(pg, tmp_path):
    record = bench.run_size(pg, N_USERS, seed=3, workdir=str(tmp_path), profile=True, repeats=1)

    assert record["n_users"] == N_USERS
    assert record["advisor"]["errors"] == 0
    # The generator's data is expected to draw exactly these warnings: appservice users, guests,
    # phone numbers (none of them is migrated or MAS has no use for them).
    assert set(record["advisor"]["warning_checks"]) <= {"appservice_users", "guest_users", "non_email_threepids"}
    for run in (record["import"], record["dry_run"]):
        assert run["errors"] == 0
        assert run["peak_rss_mb"] > 0
        assert run["wall_seconds"] > 0
    assert record["dry_run"]["dry_run"] is True and record["import"]["dry_run"] is False

    tables = {e["entity"]: e for e in record["entities"]}
    assert set(tables) == {t for t, _stages in bench.ENTITIES}
    assert tables["users"]["rows"] == record["import"]["migrated"]["users"] > 0
    assert tables["compat_sessions"]["rows"] == (record["import"]["migrated"]["device_sessions"]
                                                 + record["import"]["migrated"]["deviceless_sessions"])
    for entity in tables.values():
        floor = record["floor"]["tables"][entity["entity"]]
        assert floor["rows"] == entity["rows"]
        assert floor["method"] in bench.FLOOR_METHODS
        assert entity["rows"] == 0 or floor["bytes"] > 0
    assert record["ratios"]["import_over_floor"] > 0
    assert record["ratios"]["dry_run_over_import"] >= record["ratios"]["dry_run_rehearsal_over_import"] > 0
    assert record["floor"]["build_seconds"] > 0
    assert set(record["profile"]["synapse_side"]) >= {"users", "access_tokens"}

    # verify ran after the import and found every row the import wrote.
    assert record["verify"]["rows"] == sum(record["import"]["migrated"].values())
    assert record["verify"]["verdict"] == f"verified: {record['verify']['rows']} rows in 9 entities, 0 missing"

    table = bench.format_table(record)
    assert "verify: " in table
    assert "TOTAL, end to end" in table and "imp/floor" in table and "dry run:" in table
    assert "users" in table and "compat_access_tokens" in table

    results = tmp_path / "results.json"
    bench.append_results(str(results), [record])
    bench.append_results(str(results), [record])
    stored = json.loads(results.read_text())
    assert len(stored) == 2 and stored[-1]["ratios"]["import_over_floor"] == record["ratios"]["import_over_floor"]
    summary = bench.format_summary([record])
    assert f"{N_USERS:,}" in summary and "dry run within 10% of the import" in summary
    markdown = bench.format_markdown(bench.latest_by_size(stored))
    assert f"| {N_USERS:,} |" in markdown and "**total, end to end**" in markdown

    # Nothing of the run is left in the cluster.
    left = pg.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")
    assert left == []


def test_bench_plot_is_drawn_when_matplotlib_is_there(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import pytest
        pytest.skip("matplotlib is the bench's own package (requirements-bench.txt)")
    with open(os.path.join(ROOT, "bench", "results", "results.json")) as handle:
        records = json.load(handle)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    png = tmp_path / "bench.png"
    assert bench.plot(str(results), str(png))
    assert png.stat().st_size > 1000
