"""The memory guard on its own: cgroup creation and cleanup, the command-line wrapper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rt_support import MiB, dead_owner_token

from flightcheck.runtimes import _proc
from flightcheck.runtimes.guard import create_guard, remove_stale_cgroups

ALLOC = "b = [bytearray(8 << 20) for _ in range(40)]; print('survived')"


def _cgroup_or_skip() -> Path:
    try:
        guard = create_guard(64 * MiB, mode="cgroup")
    except OSError as exc:
        pytest.skip(f"no writable memory cgroup: {exc}")
    assert guard.cgroup is not None
    guard.close()
    return guard.cgroup.parent


def test_cgroup_guard_sets_the_limit_and_removes_its_cgroup() -> None:
    _cgroup_or_skip()
    guard = create_guard(96 * MiB, mode="auto")
    d = guard.cgroup
    assert guard.kind in ("cgroup-v1", "cgroup-v2") and d is not None and d.is_dir()
    limit_file = "memory.limit_in_bytes" if guard.kind == "cgroup-v1" else "memory.max"
    assert int((d / limit_file).read_text()) == 96 * MiB
    if (d / "memory.memsw.limit_in_bytes").exists():
        assert int((d / "memory.memsw.limit_in_bytes").read_text()) == 96 * MiB
    guard.close()
    guard.close()
    assert not d.exists()


def test_guard_command_line_reports_oom_and_exits_137(tmp_path: Path) -> None:
    report = tmp_path / "guard.json"
    done = subprocess.run(
        [sys.executable, "-m", "flightcheck.runtimes.guard", "--limit", "64Mi",
         "--report", str(report), "--", sys.executable, "-c", ALLOC],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 137, done.stderr
    assert "survived" not in done.stdout
    data = json.loads(report.read_text())
    assert data["oom"] is True and data["limit"] == 64 * MiB
    assert data["peak"] >= 60 * MiB
    assert "flightcheck guard:" in done.stderr


def test_guard_command_line_passes_the_exit_code_through(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flightcheck.runtimes.guard", "--limit", "256Mi", "--",
         sys.executable, "-c", "import sys; print('fine'); sys.exit(4)"],
        capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (4, "fine")


def test_stale_cgroups_of_dead_owners_are_removed() -> None:
    parent = _cgroup_or_skip()
    dead = dead_owner_token()
    stale = parent / f"flightcheck-{dead}-deadbeef"
    mine = parent / f"flightcheck-{_proc.owner_token()}-cafebabe"
    stale.mkdir()
    mine.mkdir()
    try:
        assert remove_stale_cgroups() >= 1
        assert not stale.exists() and mine.is_dir()
    finally:
        for d in (stale, mine):
            if d.exists():
                d.rmdir()
