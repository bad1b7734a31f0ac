"""The `sage` command (also installed as `sage-cluster`): the root group, its --config and -v, and how errors exit.

Where the commands are: cli/nodes.py the ones several groups share (start, stop, restart, status, logs, deploy,
add, remove); cli/cluster.py, head.py, worker.py, job.py, config.py and inventory.py the rest of each group;
cli/bootstrap.py setup-ssh and provision. They call the package's functions: operations.py for the playbook runs,
jobs.py for Ray's Jobs API, config.py and config_edit.py for the config file.
"""
from __future__ import annotations

import os
import sys

import click

from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError

from sage_cluster import __version__
from sage_cluster.cli.cluster import cluster
from sage_cluster.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, config_and_verbose
from sage_cluster.cli.config import config
from sage_cluster.cli.head import head
from sage_cluster.cli.inventory import inventory
from sage_cluster.cli.job import job
from sage_cluster.cli.worker import worker
from sage_cluster.lock import LockBusy


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sage")
@config_and_verbose
def cli(config_path: str | None, verbose: int) -> None:
    """Run a Ray cluster on your own machines over SSH.

    Reads --config, $SAGE_CONFIG, the project's config/cluster.yaml, ./config/cluster.yaml,
    ~/.sage/cluster.yaml or ~/.sage/config.yaml (the first found; `sage cluster info` says which);
    without one, runs a one-machine cluster on this host. All remote work is done by Ansible playbooks.

    \b
    Example, the first deployment:
      sage cluster info
      sage cluster deploy
      sage cluster start
      sage cluster status
      sage job submit -- python script.py

    --config and -v go before the command or after it; the command's own --config wins.

    \b
    Example, another cluster's config, with more Ansible output:
      sage --config ~/lab.yaml -v cluster status
      (the same as: sage cluster status --config ~/lab.yaml -v)
    """


for group in (cluster, head, worker, job, config, inventory):
    cli.add_command(group)


def main() -> None:
    # Everything this tool creates (runs, artifacts, known_hosts, token, locks) is private to the user.
    os.umask(0o077)
    try:
        cli.main(standalone_mode=False)
    except ConfigError as exc:
        click.echo(click.style("error: ", fg="red") + str(exc), err=True)
        sys.exit(EXIT_USAGE)
    except LockBusy as exc:
        click.echo(click.style("error: ", fg="red") + str(exc), err=True)
        sys.exit(EXIT_FAILED)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
