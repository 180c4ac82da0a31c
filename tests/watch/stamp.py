"""Copy standard input to standard output, each line prefixed with the wall-clock time it came at.

For the namespace tests: ``rstscope watch ... | python stamp.py`` shows when each line was printed.
SIGINT is ignored (the lab stops the whole process group): the stamper reads until watch has printed
its summary and closed the pipe.
"""

import signal
import sys
import time

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for line in sys.stdin.buffer:
    sys.stdout.buffer.write(f"{time.time():.6f} ".encode() + line)
    sys.stdout.buffer.flush()
