"""``python -m rstscope`` runs the command line (the lab starts the pair this way inside namespaces)."""

from rstscope.cli import main

main()
