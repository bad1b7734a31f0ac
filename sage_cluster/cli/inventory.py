"""`sage inventory`: the Ansible inventory rendered from the config."""
from __future__ import annotations

import click

from ansible_collections.sage.cluster.plugins.plugin_utils import inventory as inv

from sage_cluster import operations
from sage_cluster.operations import Invocation
from sage_cluster.cli.common import common_options


@click.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "ini"]), default="yaml", show_default=True,
              help="yaml (what sage runs with), json (an inventory script's --list), or ini.")
@common_options()
def inventory(invocation: Invocation, fmt: str) -> None:
    """Print the Ansible inventory that the config renders to (groups sage_head, sage_workers).

    \b
    Example:
      sage inventory --format ini
    """
    click.echo(inv.dumps(operations.load(invocation), fmt), nl=False)
