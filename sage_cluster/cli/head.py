"""`sage head ...`: the Ray head node."""
from __future__ import annotations

import click

from sage_cluster.cli import nodes


@click.group(commands=[nodes.start, nodes.stop, nodes.restart, nodes.status, nodes.logs])
def head() -> None:
    """The Ray head node: start, stop, status, restart, logs.

    \b
    Example:
      sage head status
      sage head logs --lines 50
    """

