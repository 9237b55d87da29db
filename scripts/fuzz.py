#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers at the edge, for a bounded time.

    .venv/bin/python -m pip install -e '.[fuzz]'
    .venv/bin/python scripts/fuzz.py                     # every target, 60 s each
    .venv/bin/python scripts/fuzz.py --target token --seconds 300

Targets (``tests/fuzz/targets.py``): ``form`` (the form-body parser), ``basic`` (HTTP Basic
credentials), ``token`` (the verifier's header and claims parsing, and the refresh-token parser).
Each runs in its own process, starting from the inputs kept in ``tests/fuzz/corpus/<target>/``
and growing a working corpus in ``--work`` (not tracked). An input that crashes a target is
written to ``--work/<target>/crash-*``; copy it into ``tests/fuzz/corpus/<target>/``, where
``tests/fuzz/test_corpus.py`` keeps it as a regression test, and fix the cause. The last lines of
each run (executions, coverage) are printed; the exit status is non-zero if any target crashed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGET_NAMES = ("form", "basic", "token")


def _child(target: str, seconds: int, work: Path) -> None:
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["issuer", "tests.fuzz", "urllib.parse", "base64", "json"]):
        from tests.fuzz.targets import TARGETS
    one_input = TARGETS[target]
    crashes = work / target
    live = crashes / "corpus"
    live.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/",
        "-max_len=10000",  # past the 8 KiB token limit and Python's JSON nesting limit
        "-len_control=0",  # long inputs from the start: length-dependent limits are what we test
        "-print_final_stats=1",
        str(live),
        str(CORPUS / target),
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=(*TARGET_NAMES, "all"), default="all")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "issuer-fuzz")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.target, args.seconds, args.work)
        return 0
    failed = []
    for target in TARGET_NAMES if args.target == "all" else (args.target,):
        print(f"== {target}: {args.seconds} s", flush=True)
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--target",
                target,
                "--seconds",
                str(args.seconds),
                "--work",
                str(args.work),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        tail = [
            line for line in result.stderr.splitlines() if line.startswith(("#", "stat::", "==", "INFO: A"))
        ]
        print("\n".join(tail[-12:]))
        if result.returncode != 0:
            failed.append(target)
            print(result.stderr[-4000:])
    print("crashed: " + ", ".join(failed) if failed else "no crash")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
