"""The build stage's type gate on a real service image: askdesk installs the openai SDK from
PyPI (tests/fixtures/onboard/askdesk), and a keyword its pinned version does not have fails the
build through the SDK's overloads; the service as written passes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.results import Status
from flightcheck.stages import build

ASKDESK = Path(__file__).resolve().parent.parent / "fixtures" / "onboard" / "askdesk"


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

    llm = tmp_path / "askdesk" / "service" / "llm.py"
    llm.write_text(llm.read_text().replace("temperature=TEMPERATURE,",
                                           "temperature=TEMPERATURE, max_token=64,"))
    res = await build.run(ctx)
    assert res.status is Status.FAIL, res
    [finding] = res.findings
    assert (finding.code, finding.file, finding.line) == ("FC902", "service/llm.py", 24)
    assert finding.message == ("`max_token` is not a parameter of AsyncCompletions.create() in "
                               "the image's openai 3.57.0")
