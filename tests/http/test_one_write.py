"""``issuer serve``'s connections write through :class:`issuer.http.limits.OneWrite`: what is written
in one step of the event loop leaves in one write of the transport, in the order written, and
nothing is held past a close, a half-close or :data:`~issuer.http.limits.COALESCE_BYTES`.

The transport here records the writes it is given (a real socket cannot tell one write from two:
TCP may merge them); that the answers' bytes stay the same over real sockets is what
``tests/http/test_answer_now.py`` and the request-limit tests check, through the same protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from issuer.http.limits import COALESCE_BYTES, OneWrite


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def write_eof(self) -> None:
        self.calls.append(("eof", None))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def _turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_step_leave_in_one_write_in_order() -> None:
    raw = Recording()
    one = OneWrite(raw, asyncio.get_running_loop())
    one.write(b"HTTP/1.1 200 OK\r\n\r\n")
    one.write(b"")
    one.write(b"body")
    assert raw.calls == []  # held until the loop's next turn
    await _turn()
    assert raw.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    one.write(b"second")
    await _turn()
    one.write(b"third")
    one.flush()
    assert raw.calls[1:] == [("write", b"second"), ("write", b"third")]
    await _turn()
    assert len(raw.calls) == 3  # nothing written twice


async def test_close_and_half_close_write_what_is_held_first() -> None:
    raw = Recording()
    one = OneWrite(raw, asyncio.get_running_loop())
    one.write(b"answer")
    one.write_eof()
    one.write(b"late")
    one.close()
    assert raw.calls == [("write", b"answer"), ("eof", None), ("write", b"late"), ("close", None)]
    await _turn()
    assert len(raw.calls) == 4


async def test_a_large_write_is_not_held() -> None:
    raw = Recording()
    one = OneWrite(raw, asyncio.get_running_loop())
    one.write(b"head")
    one.write(b"x" * COALESCE_BYTES)
    assert raw.calls == [("write", b"head" + b"x" * COALESCE_BYTES)]
    one.write(b"y" * (COALESCE_BYTES + 1))
    assert raw.calls[1] == ("write", b"y" * (COALESCE_BYTES + 1))


async def test_nothing_is_written_to_a_transport_that_is_closing() -> None:
    raw = Recording()
    one = OneWrite(raw, asyncio.get_running_loop())
    one.write(b"held")
    raw.closing = True  # the connection was lost meanwhile
    await _turn()
    assert raw.calls == []
    assert one.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's own
    assert one.is_closing()
