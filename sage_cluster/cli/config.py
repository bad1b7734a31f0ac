"""`sage config ...`: show the effective config, or write the commented template."""
from __future__ import annotations

from pathlib import Path

import click
from ruamel.yaml import YAML

from ansible_collections.sage.cluster.plugins.plugin_utils import config as cfgmod
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError

from sage_cluster import operations
from sage_cluster import rayup_import, report
from sage_cluster.operations import Invocation
from sage_cluster.cli.common import common_options
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
def show(invocation: Invocation) -> None:
    """Print the effective config: the file's values with defaults filled in.

    \b
    Example:
      sage config show --json
    """
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
@click.option("--config", "config_path", metavar="PATH",
              help="Where to write (default: $SAGE_CONFIG, else ~/.sage/config.yaml).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(config_path: str | None, force: bool) -> None:
    """Write the guide's config template, every key commented, for you to edit.

    \b
    Example:
      sage config init && $EDITOR ~/.sage/config.yaml
    """
    path = cfgmod.write_path(config_path)
    write_new(path, cfgmod.template_text(), force)
    click.echo(f"Wrote {path}. Edit head.host, workers_ssh_hosts and ssh.* for your machines.")


@config.command(name="import")
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "output", metavar="PATH",
              help="Where to write the sage config (default: $SAGE_CONFIG, else ~/.sage/config.yaml).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
def import_(source: Path, output: str | None, force: bool, as_json: bool) -> None:
    """Turn a `ray up` cluster file of the local provider into a sage config.

    Carries provider.head_ip, provider.worker_ips, auth.ssh_user, auth.ssh_private_key and the --port,
    --dashboard-port, --dashboard-host, --num-cpus and --num-gpus of `ray start` in head_start_ray_commands and
    worker_start_ray_commands (read, never run). What cannot be carried (setup commands, file mounts, docker,
    autoscaling, ...) is listed, with what to use instead, here and as comments in the written file.

    \b
    Example:
      sage config import ~/ray/cluster.yaml
      sage config import cluster.yaml --output config/cluster.yaml --force
    """
    imported = rayup_import.convert(source)
    path = cfgmod.write_path(output)
    cfgmod.parse(imported.text, path)  # what is written loads (a ConfigError here is this tool's bug, said plainly)
    write_new(path, imported.text, force)
    if as_json:
        report.emit_json({"written": str(path), "source": str(source), "cluster_name": imported.cluster_name,
                          "head": imported.head, "workers": imported.workers, "ssh_user": imported.user,
                          "key_path": imported.key_path,
                          "not_carried": [{"what": w, "instead": i} for w, i in imported.not_carried]})
        return
    name = f' "{imported.cluster_name}"' if imported.cluster_name else ""
    click.echo(f"Wrote {path} from the `ray up` cluster{name} in {source}: head {imported.head}, workers "
               f"{', '.join(imported.workers) or 'none'}, ssh user {imported.user}, key {imported.key_path}.")
    if imported.not_carried:
        click.echo("Not carried over (also written as comments at the top of the file), and what to use instead:")
        for line in imported.not_carried_lines():
            click.echo(f"  - {line}")
    click.echo(f"Next: sage cluster info{'' if output is None else f' --config {path}'}")


def write_new(path: Path, text: str, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists. Fix: edit it, pass --force to overwrite it, or write elsewhere "
                          "(--config for init, --output for import).")
    write_atomic(path, text)
