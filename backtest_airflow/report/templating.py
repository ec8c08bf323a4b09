"""Rendering of the report and the Backtests page: one Jinja2 environment, autoescaping on.

Templates are in `templates/`, the styles and the sorting script in `static/`, inlined into each
page so that a report stays one self-contained file. The page's Content-Security-Policy allows
no script but that one, by the SHA-256 hash of the exact text inlined.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

import jinja2
from markupsafe import Markup

from backtest_airflow.report.formatting import plain

PACKAGE_DIR = Path(__file__).parent
SCRIPT_FILE = "sort.js"


@functools.cache
def asset(name: str) -> str:
    """A file of `static/`, as inlined into the pages."""
    return (PACKAGE_DIR / "static" / name).read_text(encoding="utf-8")


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


SCRIPT_HASH = script_hash(asset(SCRIPT_FILE))
CSP = (
    f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {SCRIPT_HASH}; "
    "base-uri 'none'; form-action 'none'"
)
# The Backtests pages' own: the same, but their pair-history form may submit to the page itself.
PAGE_CSP = CSP.replace("form-action 'none'", "form-action 'self'")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=lambda value: "" if value is None else value,  # a missing value shows as nothing
)
# Markup (never escaped) only for our own output: the static files, the CSP and the charts' SVG
# (charts.base.figure_svg). Everything else, data included, is escaped by the templates.
_env.globals.update(csp=Markup(CSP), inline=lambda name: Markup(asset(name)), script_file=SCRIPT_FILE)
_env.filters["plain"] = plain


def render(template: str, **context: object) -> str:
    """`templates/<template>` rendered with `context`."""
    return _env.get_template(template).render(context)
