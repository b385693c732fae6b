"""What README and docs/dagger.md say about the Dagger module is what ran: never a `dagger call`,
the harness named as what executed the functions, the verdict table the e2e test asserts."""

from __future__ import annotations

import re

from e2e_support import EXPECTED_LESSON_TABLE, EXPECTED_TABLE, REPO

DOCS = (REPO / "docs" / "dagger.md").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")
IN_DAGGER = README.split("### In Dagger", 1)[1].split("\n### ", 1)[0]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_docs_show_the_table_the_e2e_test_asserts() -> None:
    assert EXPECTED_TABLE in DOCS


def test_the_docs_show_the_lessons_table_their_e2e_test_asserts() -> None:
    assert EXPECTED_LESSON_TABLE in DOCS


def test_no_doc_claims_a_dagger_engine_ran_and_each_says_what_did() -> None:
    for name, text in (("docs/dagger.md", _flat(DOCS)), ("README In Dagger", _flat(IN_DAGGER))):
        assert "no `dagger call` has run here" in text or \
            "no `dagger call` has ever run here" in text, name
        assert "harness" in text and "registration" in text and "schema" in text, name
        for claim in (r"`dagger call[^`]*` (ran|passed|succeeded)", r"verified (in|with) Dagger",
                      r"ran in Dagger", r"tested (in|with) a (real )?Dagger engine"):
            assert not re.search(claim, text, re.I), (name, claim)
