"""Stands in for `django` on a test server's path (see tests/server_path/__init__.py): importing
it fails as if it were not installed, and the library that tried goes on without it."""

raise ImportError("django is left out of the test servers' path (tests/server_path)", name="django")
