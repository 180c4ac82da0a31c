"""The lab: reproduce TCP resets between two network namespaces and keep the evidence.

``scenarios`` turns options (or a preset) into a plan: a list of steps as plain
data.  ``netns`` executes a plan as root and always tears down what it built.
``trace`` and ``nstat`` collect the kernel's side, ``rundir`` writes and reads the
run directory, ``groundtruth`` joins the analyzer's verdicts with the kernel and
the clients, and ``validate`` measures how often they agree.  Nothing here runs a
command at import time.
"""
