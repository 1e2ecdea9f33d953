"""The administrator's console: pages, a JSON API under /api/ and /metrics, on its own listener ([admin]).

views.py gathers what each page shows (no sockets, no HTML); site.py is the twisted.web adapter:
login, CSRF, threads; templates/ are Jinja2 with autoescaping on; metrics.py counts requests.
"""
