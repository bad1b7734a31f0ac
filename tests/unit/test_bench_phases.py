"""bench/phases.py without a rig: a start's phases from a run dir as sage leaves it, and they add up."""
import datetime
import json
import os

from bench.phases import PHASES, start_phases

T0 = 1_700_000_000.0


def iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(T0 + seconds, datetime.timezone.utc).isoformat()


def result(host: str, play: str, start: float, end: float) -> dict:
    return {"event": "runner_on_ok", "event_data": {"host": host, "play": play, "task_action": "sage_ray_node",
                                                   "start": iso(start), "end": iso(end)}}


def test_phases_follow_each_other_and_add_up_to_the_command(tmp_path):
    run = tmp_path / ".sage" / "runs" / "20261202-140000-cluster-42"
    (run / "inventory").mkdir(parents=True)
    (run / "inventory" / "hosts.yml").write_text("all: {}\n")
    os.utime(run / "inventory" / "hosts.yml", (T0 + 0.3, T0 + 0.3))
    evs = [{"event": "playbook_on_start", "created": iso(1.0)},
           {"event": "runner_on_ok", "event_data": {"host": "h", "play": "Check the inputs",
                                                    "task_action": "ansible.builtin.assert"}},
           result("h", "Ray head, then the workers", 1.5, 6.5),
           result("w1", "Ray head, then the workers", 6.6, 11.0),
           result("w2", "Ray head, then the workers", 6.6, 12.0),
           result("h", "Wait until the head lists the started workers alive", 12.2, 12.5),
           {"event": "playbook_on_stats", "created": iso(12.6)}]
    events_dir = run / "artifacts" / "abc" / "job_events"
    events_dir.mkdir(parents=True)
    for i, e in enumerate(evs, 1):
        (events_dir / f"{i}-uuid{i}.json").write_text(json.dumps(e))
    phases = start_phases(run, "h", T0, T0 + 13.0)
    assert list(phases) == [key for key, *_ in PHASES]
    assert round(phases["head"], 3) == 5.0
    assert round(phases["workers"], 3) == 5.5  # from the head's end to the last worker's end
    assert round(phases["wait"], 3) == 0.5
    assert round(sum(phases.values()), 3) == 13.0
