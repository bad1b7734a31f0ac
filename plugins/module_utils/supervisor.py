"""Ray under systemd: the unit sage-ray.service that keeps a node's Ray running (restarted when it dies, started at
boot), its environment file, which supervisor a node gets, and what status says of it. The unit is the SSH user's
own (a user unit, `systemctl --user`, linger on) or, where the config says that user may become root (ssh.become:
sudo without a password), a system unit in /etc/systemd/system with User= that user: Ray runs as the SSH user
either way; only the unit file and the system manager's changes need root.

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
SYSTEM_UNIT_PATH = "/etc/systemd/system/" + UNIT
# The two kinds of unit (scopes), each with its file and its key in a node's facts (status probe and module alike).
UNIT_PATHS = {"user": UNIT_PATH, "system": SYSTEM_UNIT_PATH}
UNIT_FACTS = {"user": "unit", "system": "system_unit"}
# Root for a system unit's changes: never a password prompt (a run has nobody to type it), a failure instead.
SUDO = ["sudo", "-n", "--"]
# Every value of the unit's environment, the Redis password included: 0600, never in the unit (which is 0644).
ENV_PATH = "~/.sage/ray-node.env"
LINGER_DIR = "/var/lib/systemd/linger"
# The unit's ExecStart names the Redis password by this variable, which only ENV_PATH holds.
REDIS_PASSWORD_VAR = "SAGE_RAY_REDIS_PASSWORD"
REDIS_PASSWORD_FLAG = "--redis-password="
SUPERVISORS = ("auto", "systemd", "none")
# The properties status reads of the unit (systemctl [--user] show; reading the system's needs no root).
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


def unit_text(argv, log_path, env_path, node_type, run_as=None):
    """The unit file for `ray start` argv (without --block) logging to log_path: (its text, the secret env that
    must go to env_path instead). The text holds no secret: the world may read it. run_as: the user a system unit
    runs Ray as (None: a user unit, which its user's own manager runs)."""
    words, secret = unit_argv(["/bin/sh", "-c", LOG_WRAPPER, log_path, *argv, "--block"])
    # The system manager starts units at boot before the network unless told; a user manager starts after it.
    network = ["Wants=network-online.target", "After=network-online.target"] if run_as else []
    # User= alone: its group is the user's own primary group (systemd's default), its supplementary groups too.
    user = ["User=" + run_as.replace("%", "%%")] if run_as else []
    text = "\n".join([
        "# Written by sage (sage_ray_node): `sage cluster start` rewrites it, `sage cluster stop` disables it.",
        "[Unit]",
        f"Description=Ray {node_type} node of a sage cluster",
        # A worker retries until its head is up, however long the head takes to boot: no start limit gives up.
        "StartLimitIntervalSec=0",
        *network,
        "",
        "[Service]",
        "Type=simple",
        *user,
        # A path, not a word: systemd takes quotes here as part of the name (and then ignores the file).
        "EnvironmentFile=" + env_path.replace("%", "%%"),
        "ExecStart=" + " ".join(words),
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        # No ExecStop=ray stop (it kills every Ray of the host). `ray start --block` ends its Ray gracefully on
        # SIGTERM (a drain of up to 30 s, then Ray's own 16 s grace); what is left then gets SIGKILL. mixed, not
        # control-group: when --block died of a crash, processes of that Ray that ignore SIGTERM would hold the
        # restart for TimeoutStopSec.
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "LimitNOFILE=1048576",
        "",
        "[Install]",
        "WantedBy=" + ("multi-user.target" if run_as else "default.target"),
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


def as_owner(scope, argv):
    """argv run by the owner of scope's units: the SSH user for a user unit, root (sudo -n) for a system unit."""
    return [*SUDO, *argv] if scope == "system" else list(argv)


def systemctl_argv(scope, *args, change=False):
    """systemctl on scope's manager; a change to the system's runs as root, a read as the SSH user."""
    if scope == "user":
        return ["systemctl", "--user", *args]
    return as_owner(scope, ["systemctl", *args]) if change else ["systemctl", *args]


def sudo_refused(user, host, error, leaving=False):
    """The line for a node where `sudo -n` fails: its config wants a system unit (ssh.become), or has one to leave."""
    if leaving:
        what = f"{host} has the system unit {UNIT} of an earlier start with ssh.become, and moving off it needs root"
        fix = (f"set ssh.become: true for {host} again, or have an admin run there: sudo systemctl disable --now "
               f"{UNIT} && sudo rm {SYSTEM_UNIT_PATH}")
    else:
        what = f"ssh.become is true for {host} (Ray as a system unit)"
        fix = (f"let {user} run sudo without a password on {host} (e.g. /etc/sudoers.d/sage: `{user} ALL=(ALL) "
               "NOPASSWD: ALL`), or set ssh.become: false for it (a user unit instead)")
    return f"{what}, but {user} cannot run sudo without a password there ({error}). Fix: {fix}."


def choose(asked, pid1, user, host="this host", become=False, sudo_error=None, manager_error=None,
           linger_error=None, linger=True):
    """Which supervisor a node gets: ("system", why) or ("user", why) for a unit of that scope, ("none", why), or
    ("fail", the line saying why) when the config asks for what the node cannot have. pid1: /proc/1/comm; become:
    ssh.become (the SSH user may sudo); sudo_error: why `sudo -n` fails (None: it works); manager_error: why
    `systemctl --user` does not work (None: it does); linger_error: why linger is off and could not be turned on
    (None: it is on, or was not tried); linger: whether it is on (off and not tried: doctor and check mode, which
    change nothing)."""
    if asked == "none":
        return "none", "config"
    if pid1 == "systemd" and become:
        return ("fail", sudo_refused(user, host, sudo_error)) if sudo_error else ("system", "system unit")
    if pid1 != "systemd":
        why = "PID 1 is not systemd"
    elif manager_error:
        why = f"no systemd user manager for {user} ({manager_error})"
    elif linger_error:
        why = (f"linger is off for {user} and could not be turned on ({linger_error}); without it the unit stops at "
               f"logout. {ADMIN_LINGER.format(user=user)}")
    elif not linger:
        return "user", "user unit, linger off: `sage cluster start` turns it on (loginctl enable-linger)"
    else:
        return "user", "user unit, linger on"
    return ("fail", f"remote.supervisor is systemd, but {why}") if asked == "systemd" else ("none", why)


def configured(asked, become=False):
    """What the config alone says of a node's supervisor (`sage cluster info`, which asks no node; status and
    doctor say what the node has or would get)."""
    unit = "a systemd system unit (ssh.become)" if become else "a systemd user unit"
    if asked == "systemd":
        return f"systemd: {unit}, or the start fails saying why"
    if asked == "auto":
        return f"auto: {unit} where the node's PID 1 is systemd, else none"
    return "none: config"


def doctor_check(asked, facts, errors, user, host, become):
    """Doctor's supervisor row, {ok, warn, detail, fix}: what `sage cluster start` gives this node (choose, with
    linger only read: doctor changes nothing; errors: choose's sudo_error or manager_error) and, when it differs,
    what runs it now (describe)."""
    kind, why = choose(asked, facts["pid1"], user, host, become, linger=facts["linger"], **errors)
    if kind == "fail":
        detail, fix = why.partition(" Fix: ")[::2]
        return {"ok": False, "warn": False, "detail": detail,
                "fix": fix or ("set remote.supervisor to auto (plain processes where systemd cannot be had) or none, "
                               "for this node or every node")}
    detail = ("" if asked == "systemd" and kind != "none" or asked == kind else f"{asked} -> ") + (
        f"systemd ({why})" if kind != "none" else f"none: {why}")
    now = describe(asked, facts)
    if now["kind"] != ("none" if kind == "none" else "systemd") or kind != "none" and now["unit"]["scope"] != kind:
        detail += f"; now {now['text']}"
    # Linger is off: start asks logind for it, which the node's polkit may refuse (start then says so).
    warn = kind == "user" and not facts["linger"]
    fix = (f"`sage cluster start` turns linger on; if the node refuses (the start says so), "
           f"{ADMIN_LINGER.format(user=user)}" if warn else "")
    return {"ok": True, "warn": warn, "detail": detail, "fix": fix}


def parse_show(text):
    """`systemctl show -p ...` output -> {property: value}."""
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def unit_on(unit):
    """Whether a unit (its properties, None when it has no file) runs Ray or starts it at boot."""
    return unit is not None and (unit.get("UnitFileState") == "enabled" or unit.get("ActiveState") in RUNNING_STATES)


def describe(asked, facts):
    """A node's supervisor as status and --json give it: {kind, text, unit}; facts: {pid1, linger, unit,
    system_unit} (each unit: its properties, None when there is no unit file)."""
    units = [(scope, facts.get(key)) for scope, key in UNIT_FACTS.items() if facts.get(key) is not None]
    # The unit that is on says who keeps Ray running; one left off is still shown, with its state.
    scope, unit = next((u for u in units if unit_on(u[1])), units[0] if units else (None, None))
    if unit is not None and unit.get("UnitFileState") == "enabled":
        linger = "linger on" if facts.get("linger") else "linger off: it stops at logout"
        kind, text = "systemd", "systemd (system unit)" if scope == "system" else f"systemd (user unit, {linger})"
    elif unit is not None and unit.get("ActiveState") in RUNNING_STATES:
        kind, text = "systemd", f"systemd ({scope} unit, not enabled: not started at boot)"
    elif asked == "none":
        kind, text = "none", "none: config"
    elif facts.get("pid1") != "systemd":
        kind, text = "none", "none: PID 1 is not systemd"
    else:
        kind, text = "none", "none: no enabled sage-ray unit (`sage cluster start` makes it where systemd allows)"
    out = {"kind": kind, "text": text}
    if unit is not None:
        restarts = unit.get("NRestarts", "")
        out["unit"] = {"name": UNIT, "scope": scope, "active_state": unit.get("ActiveState"),
                       "sub_state": unit.get("SubState"), "enabled": unit.get("UnitFileState") == "enabled",
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
    """Whether process pid runs in a sage-ray unit's cgroup, of either scope (started by systemd, not by a plain
    `ray start`)."""
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as fh:
            return f"/{UNIT}" in fh.read()
    except OSError:
        return False


def linger_path(user):
    return os.path.join(LINGER_DIR, user)
