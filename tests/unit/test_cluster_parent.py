"""Where the suite's PostgreSQL clusters live (pgcluster.in_memory_parent): memory when it has room, else /tmp."""

from __future__ import annotations

from tests.support import pgcluster


def test_the_override_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("SYN2MAS_TEST_PG_PARENT", str(tmp_path))
    assert pgcluster.in_memory_parent() == str(tmp_path)


def test_without_room_in_memory_the_clusters_go_to_tmp(monkeypatch):
    monkeypatch.delenv("SYN2MAS_TEST_PG_PARENT", raising=False)
    assert pgcluster.in_memory_parent(min_free=1 << 62) == "/tmp"


def test_with_room_in_memory_the_clusters_go_there_if_it_is_a_tmpfs(monkeypatch):
    monkeypatch.delenv("SYN2MAS_TEST_PG_PARENT", raising=False)
    with open("/proc/mounts") as handle:
        tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in handle)
    assert pgcluster.in_memory_parent(min_free=0) == ("/dev/shm" if tmpfs else "/tmp")
