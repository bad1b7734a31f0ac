"""`sage inventory`: the Ansible inventory rendered from the config."""
from __future__ import annotations

import click

from sage_cluster import inventory as inv
from sage_cluster import operations as ops
from sage_cluster.cli.common import options


@click.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "ini"]), default="yaml", show_default=True,
              help="yaml (what sage runs with), json (an inventory script's --list), or ini.")
@options()
def inventory(opts: ops.Options, fmt: str) -> None:
    """Print the Ansible inventory that the config renders to (groups sage_head, sage_workers).

    \b
    Example:
      sage inventory --format ini
    """
    click.echo(inv.dumps(ops.load(opts), fmt), nl=False)
