"""Ray under systemd: the user unit sage-ray.service that keeps a node's Ray running (restarted when it dies,
started at boot), its environment file, which supervisor a node gets, and what status says of it.

Pure functions (no Ansible, no systemctl run here): the module (plugins/modules/sage_ray_node.py) writes and drives
the unit, the status probe (module_utils/ray_node.py) reads the facts with one shell command, and both describe
them with describe(), so tests/unit/test_supervisor.py checks them without systemd.

Facts behind the unit (../shared/DESIGN.md, "Ray under systemd", read from Ray 2.60): `ray start --block` exits 1
when one of its children dies of anything but SIGTERM, so Restart=on-failure restarts the node; a hand-run
`ray stop` ends the children with SIGTERM and leaves the --block parent (the unit stays active with no Ray: status
flags it); `ray stop` kills every Ray of the host, so there is no ExecStop: systemd signals the unit's cgroup.
"""
from __future__ import annotations

import os

UNIT = "sage-ray.service"
UNIT_PATH = "~/.config/systemd/user/" + UNIT
# Every value of the unit's environment, the Redis password included: 0600, never in the unit (which is 0644).
ENV_PATH = "~/.sage/ray-node.env"
LINGER_DIR = "/var/lib/systemd/linger"
# The unit's ExecStart names the Redis password by this variable, which only ENV_PATH holds.
REDIS_PASSWORD_VAR = "SAGE_RAY_REDIS_PASSWORD"
REDIS_PASSWORD_FLAG = "--redis-password="
SUPERVISORS = ("auto", "systemd", "none")
# The properties status reads of the unit (systemctl --user show).
PROPERTIES = ("ActiveState", "SubState", "UnitFileState", "NRestarts")
# States in which the unit has, or is about to have, a Ray (auto-restart: between a crash and RestartSec).
RUNNING_STATES = ("active", "activating", "reloading")
RESTART_SEC = 5
# The node log gets `ray start`'s output as it does without the unit, and its directory (under /tmp, emptied at
# boot) is made first. A fixed script: the log's path and the command come as its arguments, never inside it.
LOG_WRAPPER = 'umask 077; mkdir -p -- "${0%/*}" && exec "$@" >>"$0" 2>&1'


def unit_word(word):
    """One word of a unit's command line, quoted as systemd reads it: no specifier (%), no variable ($), C escapes."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def unit_argv(argv):
    """argv with the Redis password taken out: (the words of ExecStart, the secret env they name)."""
    words, secret = [], {}
    for arg in argv:
        if arg.startswith(REDIS_PASSWORD_FLAG):
            secret[REDIS_PASSWORD_VAR] = arg[len(REDIS_PASSWORD_FLAG):]
            words.append(unit_word(REDIS_PASSWORD_FLAG) + "${" + REDIS_PASSWORD_VAR + "}")
        else:
            words.append(unit_word(arg))
    return words, secret


def unit_text(argv, log_path, env_path, node_type):
    """The unit file for `ray start` argv (without --block) logging to log_path: (its text, the secret env that
    must go to env_path instead). The text holds no secret: the world may read it."""
    words, secret = unit_argv(["/bin/sh", "-c", LOG_WRAPPER, log_path, *argv, "--block"])
    text = "\n".join([
        "# Written by sage (sage_ray_node): `sage cluster start` rewrites it, `sage cluster stop` disables it.",
        "[Unit]",
        f"Description=Ray {node_type} node of a sage cluster",
        # A worker retries until its head is up, however long the head takes to boot: no start limit gives up.
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        # A path, not a word: systemd takes quotes here as part of the name (and then ignores the file).
        "EnvironmentFile=" + env_path.replace("%", "%%"),
        "ExecStart=" + " ".join(words),
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        # No ExecStop=ray stop (it kills every Ray of the host). `ray start --block` ends its Ray gracefully on
        # SIGTERM (Ray's own 16 s grace); what is left then gets SIGKILL. mixed, not control-group: when --block
        # died of a crash, processes of that Ray that ignore SIGTERM would hold the restart for TimeoutStopSec.
        "KillMode=mixed",
        "TimeoutStopSec=30",
        "LimitNOFILE=1048576",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])
    return text, secret


def env_value(value):
    """A value as systemd's EnvironmentFile reads it back: double quotes, \\ before the characters it unescapes."""
    if "\n" in value:
        raise ValueError("a value of the unit's environment has a newline")
    for char in ('\\', '"', '`', '$'):
        value = value.replace(char, "\\" + char)
    return f'"{value}"'


def env_text(env):
    """The EnvironmentFile's text (mode 0600): one KEY="value" a line, sorted."""
    return "".join(f"{key}={env_value(value)}\n" for key, value in sorted(env.items()))


# What only an admin can do where a node refuses its user linger (polkit): the line start and doctor both give.
ADMIN_LINGER = "An admin runs: sudo loginctl enable-linger {user}"


def choose(asked, pid1, manager_error, linger_error, user, linger=True):
    """Which supervisor a node gets: ("systemd", why) or ("none", why), or ("fail", why) when the config says
    systemd and the node cannot have it. pid1: /proc/1/comm; manager_error: why `systemctl --user` does not work
    (None: it does); linger_error: why linger is off and could not be turned on (None: it is on, or was not tried);
    linger: whether it is on (off and not tried: doctor, check mode, which change nothing)."""
    if asked == "none":
        return "none", "config"
    if pid1 != "systemd":
        why = "PID 1 is not systemd"
    elif manager_error:
        why = f"no systemd user manager for {user} ({manager_error})"
    elif linger_error:
        why = (f"linger is off for {user} and could not be turned on ({linger_error}); without it the unit stops at "
               f"logout. {ADMIN_LINGER.format(user=user)}")
    elif not linger:
        return "systemd", "user unit, linger off: `sage cluster start` turns it on (loginctl enable-linger)"
    else:
        return "systemd", "user unit, linger on"
    return ("fail" if asked == "systemd" else "none"), why


def configured(asked):
    """What the config alone says of a node's supervisor (`sage cluster info`, which asks no node; status and
    doctor say what the node has or would get)."""
    if asked == "systemd":
        return "systemd: a user unit, or the start fails saying why"
    if asked == "auto":
        return "auto: a systemd user unit where the node's PID 1 is systemd and its user manager works, else none"
    return "none: config"


def refusal(why):
    """The one line of a node whose config says systemd and that cannot have it (choose's "fail")."""
    return f"remote.supervisor is systemd, but {why}"


def doctor_check(asked, facts, manager_error, user):
    """Doctor's supervisor row, {ok, warn, detail, fix}: what `sage cluster start` gives this node (choose, with
    linger only read: doctor changes nothing) and, when it differs, what runs it now (describe)."""
    kind, why = choose(asked, facts["pid1"], manager_error, None, user, linger=facts["linger"])
    if kind == "fail":
        return {"ok": False, "warn": False, "detail": refusal(why),
                "fix": "set remote.supervisor to auto (plain processes where systemd cannot be had) or none, for "
                       "this node or every node"}
    detail = ("" if asked == kind else f"{asked} -> ") + (f"systemd ({why})" if kind == "systemd" else f"none: {why}")
    now = describe(asked, facts)
    if now["kind"] != kind:
        detail += f"; now {now['text']}"
    # Linger is off: start asks logind for it, which the node's polkit may refuse (start then says so).
    warn = kind == "systemd" and not facts["linger"]
    fix = (f"`sage cluster start` turns linger on; if the node refuses (the start says so), "
           f"{ADMIN_LINGER.format(user=user)}" if warn else "")
    return {"ok": True, "warn": warn, "detail": detail, "fix": fix}


def parse_show(text):
    """`systemctl show -p ...` output -> {property: value}."""
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def describe(asked, facts):
    """A node's supervisor as status and --json give it: {kind, text, unit}; facts: {pid1, linger, unit} (unit:
    the unit's properties, None when there is no unit file)."""
    unit = facts.get("unit")
    if unit is not None and unit.get("UnitFileState") == "enabled":
        linger = "linger on" if facts.get("linger") else "linger off: it stops at logout"
        kind, text = "systemd", f"systemd (user unit, {linger})"
    elif unit is not None and unit.get("ActiveState") in RUNNING_STATES:
        kind, text = "systemd", "systemd (user unit, not enabled: not started at boot)"
    elif asked == "none":
        kind, text = "none", "none: config"
    elif facts.get("pid1") != "systemd":
        kind, text = "none", "none: PID 1 is not systemd"
    else:
        kind, text = "none", "none: no enabled sage-ray unit (`sage cluster start` makes it where systemd allows)"
    out = {"kind": kind, "text": text}
    if unit is not None:
        restarts = unit.get("NRestarts", "")
        out["unit"] = {"name": UNIT, "active_state": unit.get("ActiveState"), "sub_state": unit.get("SubState"),
                       "enabled": unit.get("UnitFileState") == "enabled",
                       "restarts": int(restarts) if restarts.isdigit() else None}
    return out


def unit_without_ray(supervisor, state):
    """Why a node whose unit runs, or is about to run Ray again, has no raylet, or None."""
    unit = supervisor.get("unit") or {}
    if state["running"]:
        return None
    if unit.get("active_state") in ("activating", "deactivating"):  # auto-restart is one of activating's states
        return (f"its Ray ended and {UNIT} starts it again within {RESTART_SEC} s (restarts so far: "
                f"{unit.get('restarts')}); see it with `sage cluster status` then")
    if unit.get("active_state") == "active":
        # The two look alike from outside: a `ray start` that has not started its raylet yet, and a `ray start
        # --block` left without Ray by a hand-run `ray stop` (its SIGTERM counts as a clean exit; when one process
        # exits otherwise, e.g. one still starting, --block exits too and the unit restarts Ray).
        return (f"its {UNIT} is active but no raylet runs under it: Ray is still starting (a worker waits for its "
                "head), or a hand-run `ray stop` ended it, which the unit does not restart. Fix for the latter: "
                "`sage cluster start` restarts it")
    return None


def under_unit(pid, proc="/proc"):
    """Whether process pid runs in the unit's cgroup (started by systemd, not by a plain `ray start`)."""
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as fh:
            return f"/{UNIT}" in fh.read()
    except OSError:
        return False


def linger_path(user):
    return os.path.join(LINGER_DIR, user)
