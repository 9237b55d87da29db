"""Every input the fuzzers ever found to crash a parser (and the seeds) stays a regression test:
``tests/fuzz/corpus/<target>/<file>`` goes through ``tests.fuzz.targets.TARGETS[target]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"
INPUTS = sorted(path for path in CORPUS.glob("*/*") if path.is_file())


def test_every_target_has_a_corpus() -> None:
    assert {path.parent.name for path in INPUTS} == set(TARGETS)


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_the_corpus_does_not_crash_the_parsers(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())
