"""The report's Jinja2 environment: the page templates of ``raw2logit/report/templates/`` and each mode's
section template next to its code (``raw2logit/modes/<mode>/report.html.j2``, named ``<mode>/report.html.j2``).

Autoescaping is on, so any text from an artifact is shown as text; undefined names fail loudly (a
template error costs its section only: ``Artifacts.guarded``).
"""

from __future__ import annotations

import functools

from jinja2 import ChoiceLoader, Environment, PackageLoader, PrefixLoader, StrictUndefined
from markupsafe import Markup

from raw2logit.names import MODES

SECTION_TEMPLATE = "report.html.j2"
# Long texts (a config, a signature document) are cut here: the page stays light enough to open.
MAX_TEXT = 40_000


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit} more characters not shown)"


@functools.cache
def environment() -> Environment:
    """The shared environment (built once)."""
    modes = PrefixLoader({mode: PackageLoader(f"raw2logit.modes.{mode}", ".") for mode in MODES})
    env = Environment(
        loader=ChoiceLoader([PackageLoader("raw2logit.report", "templates"), modes]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clip"] = clip
    return env


def render(template: str, **context) -> Markup:
    """``template`` rendered with ``context``, as markup to place in the page."""
    return Markup(environment().get_template(template).render(**context))


def section_template(mode: str) -> str:
    """The name of mode ``mode``'s section template in the environment."""
    return f"{mode}/{SECTION_TEMPLATE}"
