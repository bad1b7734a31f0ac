"""`sage job ...`: run on the cluster what deploy put there (Ray's Jobs API, see jobs.py)."""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from sage_cluster import jobs
from sage_cluster import operations
from sage_cluster import report
from sage_cluster.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, common_options


def job_errors(fn: Callable) -> Callable:
    """A JobError (no cluster, no such job, a refused request) is one line and exit 1."""
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except jobs.JobError as exc:
            click.echo(click.style("error: ", fg="red") + str(exc), err=True)
            sys.exit(EXIT_FAILED)
    return inner


@click.group()
def job() -> None:
    """Run programs on the cluster with Ray's Jobs API: the token, and an SSH tunnel when the dashboard is bound
    to the head's 127.0.0.1, are handled by sage.

    \b
    Example, after `sage cluster deploy` and `sage cluster start`:
      sage job submit -- python pipeline.py --input data/
      sage job list
    """


@job.command()
@click.option("--no-wait", is_flag=True, help="Print the job's id and return; the job runs on.")
@click.option("--submission-id", metavar="ID", help="The job's id (default: Ray makes one, raysubmit_...).")
@click.option("--entrypoint-num-cpus", type=click.FloatRange(min=0), metavar="N",
              help="CPUs the driver needs (the driver then runs on a node that has them, not always the head).")
@click.option("--entrypoint-num-gpus", type=click.FloatRange(min=0), metavar="N", help="GPUs the driver needs.")
@click.option("--entrypoint-resources", metavar="JSON|K=V",
              help="Custom resources the driver needs: '{\"accel\": 1}' or accel=1[,other=2].")
@click.option("--runtime-env-json", metavar="JSON", help="Ray's runtime_env, e.g. '{\"pip\": [\"requests\"]}'.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="An environment variable for the job (repeat for more).")
@click.option("--working-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Upload this local directory and run there, for code that was not deployed (default: run in "
                   "the deployed project, remote.sage_home).")
@click.option("--check-deploy", is_flag=True,
              help="Also ask every node, beside the job, whether it runs this machine's deploy, and warn when one "
                   "runs a stale one (the status playbook: a few seconds of SSH to every node).")
@common_options(json=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@job_errors
def submit(invocation: operations.Invocation, command: tuple[str, ...], no_wait: bool, submission_id: str | None,
           entrypoint_num_cpus: float | None, entrypoint_num_gpus: float | None, entrypoint_resources: str | None,
           runtime_env_json: str | None, env: tuple[str, ...], working_dir: str | None, check_deploy: bool) -> None:
    """Run CMD in the deployed project (remote.sage_home) on the cluster, with the env of the node's Ray, and
    stream its output. Exit 0 when the job succeeded (with --no-wait: was submitted), 1 when it failed or was
    stopped, 130 on Ctrl-C (the job keeps running). With --json, the job's output goes to stderr and stdout gets
    one object: job_id, status, message, exit_code, exit_meaning.

    \b
    Example:
      sage job submit -- python script.py --epochs 3
      sage job submit --no-wait --env MODE=fast -- python -m mypkg.train
      sage job submit --working-dir ./scratch -- python try.py
      sage job submit --json --check-deploy -- python script.py > result.json
    """
    runtime_env = jobs.runtime_env(runtime_env_json, env, working_dir)
    resources = jobs.resources(entrypoint_resources)
    cfg = operations.load(invocation)
    entrypoint = jobs.entrypoint(list(command), None if working_dir else jobs.project_dir(cfg))
    with jobs.connect(cfg) as client:
        # Once the cluster answers; its warning comes while the job runs (the job is not held back for it).
        check = jobs.stale_check(cfg, report.warn) if check_deploy else None
        job_id = jobs.call("submit", submission_id, lambda: client.submit_job(
            entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env,
            entrypoint_num_cpus=entrypoint_num_cpus, entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_resources=resources))
        try:
            report.note(f"Job {job_id} submitted to the head {cfg['head']['host']}.")
            if no_wait:
                report.note(jobs.how_to_follow(job_id))
            stream = sys.stderr if invocation.json else None
            details = None if no_wait else jobs.follow(client, job_id, lambda text: jobs.write_stdout(text, stream))
            if check:
                check.join(jobs.STALE_WAIT)  # its warning is not lost to an early exit
            if details is None:
                if invocation.json:
                    details = jobs.call("read", job_id, lambda: client.get_job_info(job_id))
                    report.emit_json(jobs.result_json(job_id, details, 0, "submitted; the job runs on"))
                else:
                    click.echo(job_id)
                return
            outcome(client, job_id, details, invocation.json)
        except KeyboardInterrupt:
            report.note(f"\nInterrupted: job {job_id} keeps running on the cluster. {jobs.how_to_follow(job_id)}")
            if invocation.json:
                report.emit_json(jobs.result_json(job_id, None, EXIT_INTERRUPTED,
                                                  "interrupted; the job keeps running on the cluster"))
            sys.exit(EXIT_INTERRUPTED)


def outcome(client: Any, job_id: str, details: Any, as_json: bool = False) -> None:
    """Exit with how the job ended: 0 succeeded; 1 failed or stopped, with its last lines (on stderr)."""
    status = jobs.status_of(details)
    code = 0 if status == "SUCCEEDED" else EXIT_FAILED
    if as_json:
        report.emit_json(jobs.result_json(job_id, details, code, f"the job {status.lower()}"))
    if code == 0:
        report.note(f"Job {job_id} succeeded.")
        sys.exit(0)
    # Ray's message is its reason, then (for a failed entrypoint) a copy of the log: the reason is enough here.
    reason = (details.message or "").partition("\n")[0].partition(", last available logs")[0].rstrip(":")
    click.echo(click.style("error: ", fg="red") + f"job {job_id} {status.lower()}"
               + (f": {reason}" if reason else "") + ". Its last lines:", err=True)
    for line in jobs.last_lines(client, job_id):
        click.echo(f"  | {line}", err=True)
    sys.exit(code)


@job.command(name="list")
@common_options(json=True)
@job_errors
def list_jobs(invocation: operations.Invocation) -> None:
    """List the jobs submitted to the cluster, oldest first: id, status, start time, entrypoint.

    \b
    Example:
      sage job list
      sage job list --json
    """
    cfg = operations.load(invocation)
    with jobs.connect(cfg) as client:
        found = jobs.call("list", None, lambda: jobs.submitted(client))
    if invocation.json:
        report.emit_json([jobs.as_json(j) for j in found])
        return
    if not found:
        click.echo("No jobs.")
        return
    click.echo(report.table([[j.submission_id, jobs.status_of(j), report_time(j.start_time), j.entrypoint]
                             for j in found], ["ID", "STATUS", "STARTED", "ENTRYPOINT"]))


def report_time(millis: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(millis / 1000)) if millis else "-"


@job.command()
@click.argument("job_id", metavar="ID")
@common_options(json=True)
@job_errors
def status(invocation: operations.Invocation, job_id: str) -> None:
    """Show one job: its status, Ray's message, start and end times, entrypoint.

    \b
    Example:
      sage job status raysubmit_XyZ
      sage job status raysubmit_XyZ --json
    """
    cfg = operations.load(invocation)
    with jobs.connect(cfg) as client:
        details = jobs.call("read", job_id, lambda: client.get_job_info(job_id))
    if invocation.json:
        report.emit_json(jobs.as_json(details))
        return
    click.echo(f"Job:        {job_id}\nStatus:     {jobs.status_of(details)}")
    if details.message:
        click.echo(f"Message:    {details.message.splitlines()[0]}")
    click.echo(f"Started:    {report_time(details.start_time)}\nEnded:      {report_time(details.end_time)}")
    click.echo(f"Entrypoint: {details.entrypoint}")


@job.command()
@click.argument("job_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing until the job ends, then exit as `submit` does (0 succeeded, 1 failed/stopped).")
@common_options()
@job_errors
def logs(invocation: operations.Invocation, job_id: str, follow: bool) -> None:
    """Print a job's output so far (with --follow: until it ends).

    \b
    Example:
      sage job logs raysubmit_XyZ
      sage job logs raysubmit_XyZ --follow
    """
    cfg = operations.load(invocation)
    with jobs.connect(cfg) as client:
        if not follow:
            jobs.write_stdout(jobs.call("read the logs of", job_id, lambda: client.get_job_logs(job_id)))
            return
        try:
            outcome(client, job_id, jobs.follow(client, job_id, jobs.write_stdout))
        except KeyboardInterrupt:
            report.note(f"\nStopped following; job {job_id} keeps running. Stop it: sage job stop {job_id}")
            sys.exit(EXIT_INTERRUPTED)


@job.command()
@click.argument("job_id", metavar="ID")
@common_options(json=True)
@job_errors
def stop(invocation: operations.Invocation, job_id: str) -> None:
    """Stop a running job (Ray ends its driver: SIGTERM, then SIGKILL) and wait until it has ended. Exit 0 once
    it has ended (its status says how: STOPPED, or SUCCEEDED/FAILED if it ended first), 1 when it did not.

    \b
    Example:
      sage job stop raysubmit_XyZ
      sage job stop raysubmit_XyZ --json
    """
    cfg = operations.load(invocation)
    with jobs.connect(cfg) as client:
        details = jobs.stop(client, job_id)
    if invocation.json:
        report.emit_json(jobs.result_json(job_id, details, 0, "the job has ended"))
        return
    click.echo(f"Job {job_id}: {jobs.status_of(details)}.")
