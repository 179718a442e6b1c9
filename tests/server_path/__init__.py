"""Put first on the PYTHONPATH of the test servers (`helpers.server_environment`): stand-ins for
two development-only packages that the server's libraries import when they find them, though a
server never uses them. structlog imports `rich` (installed for schemathesis) for console
tracebacks, the server logs JSON lines to its log file; diskcache imports `django` (installed
for the client's Django middleware tests) for its Django cache backend. Both libraries go on
without them, as on a server installed with `pip install 'tlytics[server]'`, which has neither,
and a test server's start (its process and its writer process) costs about 0.3 CPU-seconds
less, a few hundred times per run.

It is this directory that goes on the path (`import rich` finds rich/ here), not its parent.
Only the servers' processes get it: the test process and the client scripts keep both.
"""
