"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) of the server: the top entries.

    .venv/bin/python bench/profile_top.py PROFILE/issuer.refresh.txt [--top 30] [--match token]

Prints the total samples, then the functions with the largest *inclusive* share (samples whose
stack contains the function at least once) and the largest *self* share (samples in which it is
the innermost frame), each as a percentage of all samples, or of the samples whose stack
contains ``--match`` (a substring of a frame, e.g. ``refresh_token.py`` for the refresh grant).
Frames are ``function (file:line)`` as py-spy writes them; the line is dropped so one function
counts once.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def _frame(text: str) -> str:
    text = _LINE.sub(")", text.strip())
    for marker in ("site-packages/", "/issuer/", "/lib/python3"):
        at = text.find(marker)
        if at >= 0:
            open_paren = text.rfind("(", 0, at)
            text = text[: open_paren + 1] + text[at + len(marker) if marker != "/issuer/" else at + 1 :]
            break
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="", help="keep only stacks with a frame containing this")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    with open(args.profile) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            if args.match and args.match not in stack:
                continue
            count = int(count_text)
            frames = [_frame(f) for f in stack.split(";") if f.strip()]
            total += count
            for name in set(frames):
                inclusive[name] += count
            leaf[frames[-1]] += count
    print(f"{total} samples{f' (stacks containing {args.match!r})' if args.match else ''}")
    for title, counter in (("inclusive", inclusive), ("self", leaf)):
        print(f"\n{title}:")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / max(total, 1):6.1f}%  {name}")


if __name__ == "__main__":
    main()
