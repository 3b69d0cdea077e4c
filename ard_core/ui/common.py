"""Gradio glue shared by the tabs: error guarding, callouts and number formatting."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable

import gradio as gr
import numpy as np

from ard_core.audio import AudioError
from ard_core.catalog import CatalogError
from ard_core.ui.context import UserError

log = logging.getLogger("ard_core.ui")

EXPECTED = (UserError, ValueError, KeyError, CatalogError, AudioError, FileNotFoundError)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an event handler; turn any exception into a short message for the user.

    Expected problems (bad input, missing data) show their own message; anything
    else is logged with its traceback on the server and shown as one line, so a
    user never sees a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except EXPECTED as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise gr.Error(str(msg), title="Cannot do that", print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the boundary between the app and its users
            log.exception("handler %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The server log has the details.",
                           print_exception=False) from None

    return wrapper


def note(text: str, kind: str = "info") -> str:
    """A one-line callout (styled by the app's CSS) for Markdown components.

    Markdown is not parsed inside an HTML block, so the two inline forms the app
    uses (**bold** and `code`) are converted here.
    """
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return f'<div class="ard-note ard-{kind}">{text}</div>'


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A score for display: '–' when missing, thousands separators for integers, scientific when tiny or huge."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    ax = abs(x)
    if ax != 0 and (ax < 10 ** -digits or ax >= 1e5):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}f}"
