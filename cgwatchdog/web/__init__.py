"""The daemon's HTTP endpoint on aiohttp: the status page, /metrics, /healthz, /api/alerts.

One module per concern (import them by name; this package imports nothing, so
``cgwatchdog status`` does not load aiohttp to print a document)::

    status.py     DaemonStatus, Health, the /api/alerts document (no I/O)
    metrics.py    the daemon's metrics and the fleet's, rendered once per cycle
    fleetview.py  what the status page shows: rows, totals, sparklines (no I/O)
    pages.py      the status page: the fleet, one miner, sign-in
    auth.py       the token for writes: Bearer, sessions, CSRF, the write guard
    assets.py     the page's style sheet, script and favicon
    sources.py    what the endpoint reads, as the daemon feeds it
    server.py     the app, its defences, and the server on http.listen

Another module adds routes with ``build_app(..., extra_routes=...)`` (or
``HttpServer(..., extra_routes=...)``); a write among them is guarded by the token
without doing anything (``auth.write_guard``), and ``auth.require_token`` guards a GET.
"""
