"""``python -m rstscope`` runs the command line (the lab starts the pair this way inside namespaces)."""

import sys

try:
    from rstscope.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself loads: no traceback either
    sys.stderr.write("rstscope: interrupted\n")
    exec("pass")  # or Python dies by SIGINT: see rstscope.status.exit_process
    sys.exit(130)

main()
