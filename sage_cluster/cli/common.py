"""Shared CLI pieces: the common options, and turning results into output and exit codes."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from ansible_collections.sage.cluster.plugins.plugin_utils.config import (SEARCH_HELP, ConfigError, Endpoint,
                                                                      parse_endpoint)

from sage_cluster import report
from sage_cluster.operations import Invocation
from sage_cluster.runner import RunResult

# Exit codes: 0 every host fine; 1 some host failed or was unreachable; 2 bad usage or config; 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class HostPort(click.ParamType):
    """A worker's HOST:PORT (port 22 when left out), checked as the config checks workers_ssh_hosts."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Endpoint:
        if isinstance(value, Endpoint):
            return value
        try:
            return parse_endpoint(value, "")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def config_and_verbose(fn: Callable) -> Callable:
    """--config and -v: on every command, and on the groups above it (`sage --config X cluster status`)."""
    # $SAGE_CONFIG is read by config.find(), not by click, so `sage cluster info` can say which named the file.
    fn = click.option("-v", "--verbose", count=True, help="More Ansible output (-v, -vv, -vvv).")(fn)
    return click.option("--config", "config_path", metavar="PATH", help=SEARCH_HELP)(fn)


def invocation_of(config_path: str | None, verbose: int, check: bool, as_json: bool) -> Invocation:
    """The command's options, with those given to the groups above it: the nearest --config, -v and --json count."""
    ctx = click.get_current_context().parent
    while ctx is not None:
        config_path = config_path or ctx.params.get("config_path")
        verbose += ctx.params.get("verbose") or 0
        as_json = as_json or bool(ctx.params.get("as_json"))
        ctx = ctx.parent
    return Invocation(config=config_path, verbose=verbose, check=check, json=as_json)


def common_options(*, check: bool = False, json: bool = False) -> Callable:
    """--config and -v on every command; --check and --json where they mean something. The command function gets
    them as its first argument, one Invocation."""
    def wrap(fn: Callable) -> Callable:
        @config_and_verbose
        @functools.wraps(fn)
        def inner(config_path: str | None, verbose: int, **kwargs: Any) -> Any:
            invocation = invocation_of(config_path, verbose, kwargs.pop("check", False), kwargs.pop("as_json", False))
            return fn(invocation, **kwargs)
        if check:
            inner = click.option("--check", is_flag=True, help="Ansible check mode: report what would change.")(inner)
        if json:
            inner = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(inner)
        return inner
    return wrap


def finish(result: RunResult, title: str, invocation: Invocation) -> None:
    """Print the per-host summary (or JSON) and exit with the run's code."""
    if invocation.json:
        report.emit_json(report.run_json(result))
    else:
        click.echo(report.summary(result, title))
        if invocation.check:
            click.echo("(check mode: nothing was changed)")
    sys.exit(exit_code(result))


def exit_code(result: RunResult) -> int:
    if result.interrupted:
        done = [n for n, h in result.hosts.items() if h.ok or h.failed or h.unreachable]
        report.note(f"Interrupted. Hosts that had reported: {', '.join(sorted(done)) or 'none'}.")
        return EXIT_INTERRUPTED
    if result.ok:
        return 0
    # Ansible's own record of the run (events, stdout): where a person looks next.
    report.note(f"Ansible's record of this run: {result.artifact_dir}")
    return EXIT_FAILED
