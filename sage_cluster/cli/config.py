"""`sage config ...`: show the effective config, or write the commented template."""
from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource
from ruamel.yaml import YAML

from sage_cluster import config as cfgmod
from sage_cluster import operations
from sage_cluster import report
from sage_cluster.operations import Invocation
from sage_cluster.cli.common import common_options
from sage_cluster.config import ConfigError
from sage_cluster.config_edit import write_atomic


@click.group(invoke_without_command=True)
@common_options(json=True)
@click.pass_context
def config(ctx: click.Context, invocation: Invocation) -> None:
    """Show the effective config (`sage config` = `sage config show`) or write a new one.

    \b
    Example:
      sage config
      sage config init
    """
    if ctx.invoked_subcommand is None:
        print_config(invocation)


@config.command()
@common_options(json=True)
@click.pass_context
def show(ctx: click.Context, invocation: Invocation) -> None:
    """Print the effective config: the file's values with defaults filled in.

    \b
    Example:
      sage config show --json
    """
    # `sage config --config X show` names the file on the group: an option given there counts unless
    # show's own command line gives it too.
    group = ctx.parent
    if (group.get_parameter_source("config_path") is ParameterSource.COMMANDLINE
            and ctx.get_parameter_source("config_path") is not ParameterSource.COMMANDLINE):
        invocation.config = group.params["config_path"]
    invocation.json = invocation.json or group.params["as_json"]
    print_config(invocation)


def print_config(invocation: Invocation) -> None:
    cfg = operations.load(invocation)
    data = cfg.as_dict()
    if invocation.json:
        report.emit_json({"config_file": str(cfg.path) if cfg.path else None, **data})
        return
    click.echo(f"# {cfg.path or 'built-in single-machine default'}")
    yaml = YAML()
    yaml.default_flow_style = False
    # "num_gpus: null" (Ray decides), not "num_gpus:", which reads like a value left out by mistake.
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    yaml.dump(data, click.get_text_stream("stdout"))


@config.command()
@click.option("--config", "config_path", metavar="PATH", envvar="SAGE_CONFIG",
              help="Where to write (default: $SAGE_CONFIG, else ~/.sage/config.yaml).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(config_path: str | None, force: bool) -> None:
    """Write the guide's config template, every key commented, for you to edit.

    \b
    Example:
      sage config init && $EDITOR ~/.sage/config.yaml
    """
    path, _ = cfgmod.resolve_path(config_path)
    write_template(path, force)
    click.echo(f"Wrote {path}. Edit head.host, workers_ssh_hosts and ssh.* for your machines.")


def write_template(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists. Fix: edit it, or pass --force to overwrite it.")
    write_atomic(path, cfgmod.template_text())
