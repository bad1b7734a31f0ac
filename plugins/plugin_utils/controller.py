"""This machine, the controller, as the cluster's reference: the Ray release and the Python its nodes run.

Read in one place for the action plugins and for `sage` (sage_cluster imports it: the collection never imports
sage_cluster)."""
from __future__ import annotations

import importlib.metadata
import sys


def ray_version() -> str:
    """This machine's Ray release, from its metadata (importing Ray takes seconds); "" without Ray (an execution
    environment without it): then no node is checked against it."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return ""


def python_version() -> str:
    """This machine's Python, major.minor: the cluster's."""
    return "%d.%d" % sys.version_info[:2]
