"""Errors as messages in the page, never as stack traces.

A saesteer error (bad input, a model that cannot load offline, an edit out of range) is shown as its
message; anything else as its type and first line, with the full traceback in the server log only.
"""

from __future__ import annotations

import html
import logging

from saesteer.errors import SaesteerError

log = logging.getLogger("saesteer.demo")


def error_text(e: BaseException) -> str:
    """One short line for the page."""
    if isinstance(e, SaesteerError):
        msg = str(e)
    else:
        log.error("demo handler failed", exc_info=e)
        first = (str(e).strip().splitlines() or [""])[0]
        msg = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return " ".join(msg.split())[:600]


def error_html(e: BaseException | None) -> str:
    """The error box's content: empty when there is no error."""
    if e is None:
        return ""
    return ('<div class="saesteer-error" role="alert" style="color: #b91c1c; border-left: 4px solid #b91c1c; '
            f'padding: 4px 10px">Error: {html.escape(error_text(e))}</div>')
