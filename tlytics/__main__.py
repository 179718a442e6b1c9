"""`python -m tlytics` runs the server, like the `tlytics` command."""

from tlytics.cli import main

main()
