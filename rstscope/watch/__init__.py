"""``rstscope watch``: verdicts live, as resets happen.

============  ========================================================================================
live          the capture tool (dumpcap, else tcpdump) writing a packet stream to a pipe, and the reader
              thread that turns it into packet chunks as bytes arrive
engine        the incremental engine: the tracker fed chunk by chunk; each connection that saw a RST is
              judged on a copy (``Tracker.peek``) a short grace after its RST, with the same evidence
              and verdict functions as ``analyze``; listen-queue trouble from the SYN rows
printer       text lines and NDJSON
metrics       the Prometheus endpoint (``--metrics``)
ring          the rotating capture ring (``--ring``) and the run-directory snapshots (``--snapshot``)
kernel        the live join of the kernel's ``tcp:tcp_send_reset`` reasons (``--kernel``)
============  ========================================================================================
"""
