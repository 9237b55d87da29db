"""Form bodies of the OAuth endpoints (RFC 6749 3.2, Appendix B), parsed strictly.

``application/x-www-form-urlencoded`` only, UTF-8 only, every parameter at most once
(RFC 6749 3.2: "parameters MUST NOT be included more than once"), parameters without a value
treated as omitted (3.1), and no NUL or other control character in any name or value
(Appendix A, :func:`issuer.http.edge.check_form_text`). Parsing is the standard library's
``parse_qsl`` in strict mode.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from litestar import Request

from issuer.errors import InvalidRequest, UnsupportedMediaType
from issuer.http.edge import check_form_text

__all__ = ["FORM", "check_content_type", "parse_form", "read_form"]

FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 32


def check_content_type(value: str | None) -> None:
    """415 unless ``value`` is the form media type, with UTF-8 as its charset if it names one."""
    if value is None:
        raise UnsupportedMediaType()
    media, _, params = value.partition(";")
    if media.strip().lower() != FORM:
        raise UnsupportedMediaType()
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("only UTF-8 form bodies are accepted")


async def read_form(request: Request) -> dict[str, str]:  # type: ignore[type-arg]
    content_type = request.headers.get("content-type")
    check_content_type(content_type)  # before the body is read
    return parse_form(content_type, await request.body())


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """The parameters of a form body, or :class:`InvalidRequest` (415, 400) saying why not."""
    check_content_type(content_type)
    try:
        text = body.decode("ascii")  # a urlencoded body is ASCII; anything else is percent-encoded
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8 form encoding") from None
    except ValueError:
        raise InvalidRequest("the body is not valid form encoding") from None
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise InvalidRequest(f"parameter {name[:40]!r} is repeated")
        seen.add(name)
        check_form_text(name, value)  # no NUL or control character ever gets further
        if value:
            form[name] = value
    return form
