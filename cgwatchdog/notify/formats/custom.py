"""A body from the operator's own Jinja2 template (``format: custom``, ``template:``).

The template runs in Jinja2's ``SandboxedEnvironment``: it can read the values it is
given but not reach Python internals (no ``__class__``, no unsafe calls), and ranges are
bounded. It sees the Alertmanager webhook document's keys (``receiver``, ``status``,
``alerts``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
``groupKey``, ...) plus ``title`` (the one-line summary) and ``firing``/``resolved``
(the alerts by status); ``| tojson`` writes JSON. Output that parses as JSON is sent as
``application/json``, anything else as ``text/plain``.

A template that fails (an error in it, a sandbox violation) fails the same way every
time, so it is a not-recoverable NotifyError naming the cause.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from jinja2 import Template, TemplateError

from cgwatchdog.alerts import Notification
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.formats.alertmanager import payload
from cgwatchdog.notify.render import FormatContext, HttpBody, title, webhook_format
from cgwatchdog.sandbox import BoundedSandbox

__all__ = ["BODY_MAX_BYTES", "compile_template", "render", "render_text", "variables"]

# No chat service takes more; a template looping over 3,000 alerts should be told.
BODY_MAX_BYTES: Final = 1 << 20


@functools.cache
def _env() -> BoundedSandbox:
    return BoundedSandbox(autoescape=False, keep_trailing_newline=True)


def compile_template(source: str) -> Template:
    """Compile the template once per receiver; NotifyError if it does not parse."""
    try:
        return _env().from_string(source)
    except TemplateError as exc:
        raise NotifyError(f"template does not compile: {exc}", recoverable=False) from None


def variables(notification: Notification, context: FormatContext) -> dict[str, Any]:
    """What a template sees: the webhook document's keys, ``title``, ``firing``, ``resolved``."""
    found: dict[str, Any] = payload(notification, context)
    found["title"] = title(notification)
    found["firing"] = [a for a in found["alerts"] if a["status"] == "firing"]
    found["resolved"] = [a for a in found["alerts"] if a["status"] == "resolved"]
    return found


def render_text(template: Template, notification: Notification, context: FormatContext) -> str:
    """Render a template over a notification; NotifyError (not recoverable) if it fails."""
    try:
        return template.render(variables(notification, context))
    # TemplateError covers the sandbox's SecurityError; the others are the template's
    # own mistakes (a division by zero, a missing key with [], a bad filter argument).
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise NotifyError(
            f"template failed: {type(exc).__name__}: {exc}", recoverable=False
        ) from None


def _prepare(settings: Any) -> Template:
    template = getattr(settings, "template", None)
    if not isinstance(template, str):
        raise NotifyError("format: custom needs a template", recoverable=False)
    return compile_template(template)


@webhook_format("custom", needs=("template",), prepare=_prepare)
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The operator's body for one notification."""
    if not isinstance(context.prepared, Template):
        raise NotifyError("format: custom needs a template", recoverable=False)
    text = render_text(context.prepared, notification, context)
    content = text.encode()
    if len(content) > BODY_MAX_BYTES:
        raise NotifyError(
            f"template produced {len(content):,} bytes, more than "
            f"{BODY_MAX_BYTES:,}: show fewer alerts (e.g. alerts[:50])",
            recoverable=False,
        )
    try:
        json.loads(text)
    except ValueError:
        return HttpBody(content, "text/plain; charset=utf-8")
    return HttpBody(content, "application/json")
