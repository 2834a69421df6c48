"""Figures and report.html.

``html`` assembles the page from a run directory's artifacts; ``artifacts`` reads them (robustly),
``tables`` and ``charts`` turn them into the data the Jinja2 templates (``templates/``, via
``templating``) lay out; ``sections`` holds the sections every run has, while each mode builds its own
(``raw2logit/modes/<mode>/report.py`` + ``report.html.j2``). ``figures`` and ``stages`` draw the
matplotlib figures the runs save as PNG.
"""
