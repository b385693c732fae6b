"""The build stage's type gate on a real service image: askdesk installs the openai SDK from
PyPI (tests/fixtures/onboard/askdesk), and a keyword its pinned version does not have fails the
build through the SDK's overloads; the service as written passes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.results import Status
from flightcheck.stages import build

ASKDESK = Path(__file__).resolve().parent.parent / "fixtures" / "onboard" / "askdesk"


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's first build checks for real (the dependency verdict is cached by image)."""
    monkeypatch.setenv("FLIGHTCHECK_CACHE_DIR", str(tmp_path / "cache"))


def _ctx(tmp_path: Path) -> Context:
    shutil.copytree(ASKDESK, tmp_path / "askdesk", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "flightcheck.toml").write_text(
        '[service]\nname = "fctest-askdesk"\nsource = "askdesk"\nimport_check = ["service.main"]\n')
    return Context(loaded=load(tmp_path / "flightcheck.toml"), runtime_name="docker")


@pytest.mark.docker
@pytest.mark.anyio
async def test_a_keyword_the_pinned_openai_sdk_lacks_fails_the_build(
    docker_client: Any, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path)
    ok = await build.run(ctx)
    assert ok.status is Status.PASS, ok
    assert "calls into the installed dependencies ok (4 file(s), ty)" in ok.summary
    assert ok.measurement("dependency_calls_failing") == 0
    assert ok.measurement("dependency_check_cached") is False

    llm = tmp_path / "askdesk" / "service" / "llm.py"
    llm.write_text(llm.read_text().replace("temperature=TEMPERATURE,",
                                           "temperature=TEMPERATURE, max_token=64,"))
    res = await build.run(ctx)
    assert res.status is Status.FAIL, res
    [finding] = res.findings
    assert (finding.code, finding.file, finding.line) == ("FC902", "service/llm.py", 24)
    assert finding.message == ("`max_token` is not a parameter of AsyncCompletions.create() in "
                               "the image's openai 3.57.0")

    # the same image and code again: the verdict from the cache, the finding with it
    again = await build.run(ctx)
    assert again.status is Status.FAIL and again.findings == res.findings, again
    assert again.measurement("dependency_check_cached") is True
    assert again.measurement("dependency_check_seconds") < res.measurement(
        "dependency_check_seconds") / 5


@pytest.mark.docker
@pytest.mark.anyio
async def test_the_dependency_verdict_is_cached_by_image_and_can_be_turned_off(
    docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(tmp_path)
    first = await build.run(ctx)
    assert first.measurement("dependency_check_cached") is False, first
    second = await build.run(ctx)
    assert second.measurement("dependency_check_cached") is True, second
    assert second.summary.rpartition("; ")[2] == first.summary.rpartition("; ")[2] == (
        "calls into the installed dependencies ok (4 file(s), ty)")
    assert second.measurement("dependency_check_seconds") < first.measurement(
        "dependency_check_seconds") / 5

    monkeypatch.setenv("FLIGHTCHECK_NO_CACHE", "1")
    off = await build.run(ctx)
    assert off.measurement("dependency_check_cached") is False, off


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Any:
    """A 64 KiB tmpfs (a container's /dev/shm, full): needs root to mount."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_the_sources_go_to_tmpfs_only_when_it_has_room(
    tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "_SHM", tiny_tmpfs)
    assert build._scratch() is None  # 64 KiB: the system's temp dir instead
    monkeypatch.setattr(build, "_SHM_ROOM", 1)
    assert build._scratch() == str(tiny_tmpfs)


@pytest.mark.docker
@pytest.mark.anyio
async def test_no_room_for_the_image_packages_says_so_and_the_build_still_judges_the_rest(
    docker_client: Any, tmp_path: Path, tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(tmp_path)
    monkeypatch.setattr(build, "_scratch", lambda: str(tiny_tmpfs))
    res = await build.run(ctx)
    assert res.status is Status.PASS, res  # the image built and its imports work
    assert res.details["dependency_calls"].startswith(
        f"not checked: the image's packages could not be written to {tiny_tmpfs} "
        "(No space left on device)"), res.details
    assert "calls into dependencies not checked: the image's packages could not be written" \
        in res.summary
    assert not any(tiny_tmpfs.iterdir())  # nothing left behind  # noqa: ASYNC240
