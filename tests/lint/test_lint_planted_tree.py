"""A small AI service with planted defects and near-misses: the findings must be exactly the
planted ones (file, line, code, category). Prints precision and recall for the record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lint_support import keys, private_key

from flightcheck.config import LintConfig, load
from flightcheck.lint import LintReport, lint_paths
from flightcheck.lint.target import service_from_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "lint"


def planted_tree(dest: Path) -> Path:
    """Copy the fixture tree and fill in the generated credentials (none live in the repo)."""
    root = dest / "planted"
    shutil.copytree(FIXTURES / "planted", root)
    k = keys()
    values = {
        "@@OPENAI@@": k["openai"],
        "@@GENERIC@@": k["generic"],
        "@@AWS_ID@@": k["aws_id"],
        "@@PRIVATE_KEY@@": private_key().strip(),
    }
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for marker, value in values.items():
                text = text.replace(marker, value)
            path.write_text(text, encoding="utf-8")
    return root


def lint_planted(tmp_path: Path) -> LintReport:
    root = planted_tree(tmp_path)
    # the service as its flightcheck.toml describes it (its probe paths: FC823)
    service = service_from_config(load(root / "flightcheck.toml").config, from_file=True)
    return lint_paths(root, [root], LintConfig(), service=service)


def test_planted_defects_are_found_exactly(tmp_path: Path) -> None:
    report = lint_planted(tmp_path)
    expected = {
        (e["file"], e["line"], e["code"], e["category"])
        for e in json.loads((FIXTURES / "planted.expected.json").read_text())["findings"]
    }
    found = {(f.file, f.line, f.code, f.category) for f in report.findings}
    true_pos = len(found & expected)
    precision = true_pos / len(found) if found else 1.0
    recall = true_pos / len(expected)
    print(f"planted tree: {len(expected)} planted, {len(found)} found, "
          f"precision {precision:.2f}, recall {recall:.2f}")
    assert found == expected, (
        f"missed: {sorted(expected - found)}\nfalse alarms: {sorted(found - expected)}"
    )
    assert not report.skipped and not report.notes


def test_planted_tree_outcome(tmp_path: Path) -> None:
    report = lint_planted(tmp_path)
    assert report.failed
    assert report.by_category() == {
        "dockerfile": 6, "secret": 4, "ai-model-pin": 4, "import": 2, "ai-timeout": 3,
        "ai-error-handling": 1, "async-blocking": 4, "syntax": 2, "cloudrun": 1, "type": 1,
        "ai-dependency": 3,
    }
    warnings = {(f.file, f.code) for f in report.findings if f.severity.value == "warning"}
    assert ("tests/test_app.py", "FC201") in warnings  # undeclared import in a test: a warning
