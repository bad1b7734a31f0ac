"""Where a `sage cluster start` spends its seconds, from the run sage leaves under its HOME.

sage keeps each run's private data dir (~/.sage/runs/<stamp>-<playbook>-<pid>/): the inventory it renders just
before it hands over to ansible-runner, and ansible-runner's job_events, stamped by ansible-playbook's callback
(`created`; per host and task `start` and `end`). With the bench's own launch and exit times, that cuts the command
into consecutive phases that add up to its wall time.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

# (key, short name, what it holds), in the order they follow each other. Each runs from the end of the one before.
PHASES = [
    ("sage_startup", "sage's start-up", "Python, imports, config, the inventory rendered"),
    ("runner_startup", "runner + ansible-playbook start-up", "ansible-runner, then ansible-playbook up to the "
                                                               "playbook's start"),
    ("before_head", "before the head's task", "the input check play, the skipped plays, argument specs"),
    ("head", "the head's task", "controller, SSH, the module, `ray start --head`"),
    ("workers", "the workers' tasks", "from the head's end to the last worker's end"),
    ("wait", "the wait play", "until the head lists every worker alive"),
    ("recap", "the play recap", "from the wait's end to the recap"),
    ("summary", "the summary", "ansible-playbook exits, ansible-runner returns, sage prints"),
]
# The floor's script has three of them.
FLOOR_PHASES = {"head": "head", "workers": "workers", "wait": "wait"}


def _ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def newest_run(home: Path, playbook: str) -> Path:
    runs = sorted((home / ".sage" / "runs").glob(f"*-{Path(playbook).stem}-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ValueError(f"no {playbook} run under {home}/.sage/runs")
    return runs[-1]


def events(run: Path) -> list[dict]:
    files = list(run.glob("artifacts/*/job_events/*.json"))
    return [json.loads(f.read_text()) for f in sorted(files, key=lambda f: int(f.name.split("-", 1)[0]))]


def start_phases(run: Path, head: str, launched: float, exited: float) -> dict[str, float]:
    """Seconds per phase of one `sage cluster start` (the run dir of its cluster.yml) on `head`."""
    evs = events(run)
    node_results = [e["event_data"] for e in evs if e["event"] in ("runner_on_ok", "runner_on_failed")
                    and e["event_data"].get("task_action", "").endswith("sage_ray_node")]
    started = [d for d in node_results if d.get("play", "").startswith("Ray head")]
    head_run = next(d for d in started if d["host"] == head)
    workers = [d for d in started if d["host"] != head]
    waited = [d for d in node_results if d.get("play", "").startswith("Wait")]
    marks = [
        launched,
        (run / "inventory" / "hosts.yml").stat().st_mtime,
        _ts(next(e["created"] for e in evs if e["event"] == "playbook_on_start")),
        _ts(head_run["start"]),
        _ts(head_run["end"]),
        max(_ts(d["end"]) for d in workers) if workers else _ts(head_run["end"]),
        max(_ts(d["end"]) for d in waited) if waited else None,
        _ts(next(e["created"] for e in evs if e["event"] == "playbook_on_stats")),
        exited,
    ]
    if marks[6] is None:  # nothing to wait for: the phase is empty
        marks[6] = marks[5]
    return {key: b - a for (key, *_), a, b in zip(PHASES, marks, marks[1:])}
