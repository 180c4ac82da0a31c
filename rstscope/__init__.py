"""rstscope: explains TCP resets.

For every RST in a capture it says who sent it, in what state the connection
was, what was in flight, and which failure it is (close race, listen backlog,
late data, refused port, ...).  The pipeline is a chain of small stages::

    reader/  ->  packets  ->  connections  ->  evidence  ->  verdicts  ->  report/

The Python API for notebooks lives in :mod:`rstscope.api`.
"""

__version__ = "0.1.0"
