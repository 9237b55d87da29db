"""The ``issuer`` command's entry point (the console script and ``python -m issuer``).

It imports nothing at module level, on purpose. ``issuer serve --workers N`` starts its workers
with multiprocessing's *spawn* method, and a spawned process begins by running the parent's main
script (the ``issuer`` console script) again. Were that script to import :mod:`issuer.cli`, and
with it the whole issuer (SQLAlchemy, Alembic, cryptography, ...), every worker would spend a
second of CPU, many more on a loaded host, before uvicorn starts the thread that answers the
supervisor's health-check pings; the supervisor would then kill a worker that is only starting
("Child process [...] died"). The CLI is imported when the command runs, not when a worker starts.
"""

from __future__ import annotations


def main() -> None:
    from issuer.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
