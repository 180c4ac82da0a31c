"""A stand-in for dumpcap in the watch tests (no root, no interface traffic needed).

``FAKE_DUMPCAP`` selects what it does:

* ``replay:PATH``: says it is capturing, writes the capture file PATH to stdout, then waits for
  SIGTERM/SIGINT and prints dumpcap's statistics line, as dumpcap does when stopped;
* ``die:PATH``: the same, but exits 1 with an error after writing the file, as if the interface went away;
* ``fail``: exits 2 at once with dumpcap's message for an interface it cannot open.
"""

import os
import signal
import sys
import time

mode, _, path = os.environ.get("FAKE_DUMPCAP", "fail").partition(":")
if mode == "fail":
    sys.stderr.write(
        "dumpcap: The capture session could not be initiated on interface 'lo' "
        "(You don't have permission to capture on that device).\n"
    )
    sys.exit(2)
stopped = False


def stop(*_):
    global stopped
    stopped = True


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
sys.stderr.write("Capturing on 'Loopback: lo'\n")
sys.stderr.flush()
with open(path, "rb") as capture:
    sys.stdout.buffer.write(capture.read())
sys.stdout.buffer.flush()
if mode == "die":
    time.sleep(0.3)
    sys.stderr.write("dumpcap: Error while capturing packets: The interface disappeared (network is down)\n")
    sys.exit(1)
while not stopped:
    time.sleep(0.05)
sys.stderr.write(
    "Packets received/dropped on interface 'Loopback: lo': 5/3 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) (62.5%)\n"
)
sys.exit(0)
