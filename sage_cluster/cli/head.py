"""`sage head ...`: the Ray head node."""
from __future__ import annotations

import click

from sage_cluster.cli.nodes import add_logs_command, add_node_commands


@click.group()
def head() -> None:
    """The Ray head node: start, stop, status, restart, logs.

    \b
    Example:
      sage head status
      sage head logs --lines 50
    """


add_node_commands(head, "head")
add_logs_command(head, "head")
