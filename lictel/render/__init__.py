"""How a report is shown: a terminal table, CSV or JSON (:mod:`.text`), SVG charts (:mod:`.svg`) and
a self-contained HTML page (:mod:`.html`). Reports (:mod:`lictel.reports`) return plain data and
never format it; the CLI, the HTTP API and the pages all render it here."""
