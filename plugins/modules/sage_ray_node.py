#!/usr/bin/python
# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: one Ray node (head or worker) brought to a state in one remote call."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sage_ray_node
short_description: Bring one Ray node to a state, or ask it for its status, log, health or cluster
description:
  - Brings one Ray node (head or worker) to what O(state) says it should be, or answers one O(query), in one
    remote call, and reports the node in the C(sage) result dict that playbooks/wait.yml and sage's runner read.
  - Exactly one of O(state) and O(query). Each takes only the options it reads (the rules at each option, and
    C(ARGUMENT_RULES) in module_utils/ray_node.py); the action plugin checks them on the controller first.
  - Idempotent. O(state=start) leaves a node alone when its Ray already runs and is joined to the configured
    head; a Ray of another cluster, or of an older token, is stopped and started again.
  - Finds the node's Ray in /proc, among the processes of the user it runs as (never another user's, unlike
    C(ray stop) run as root). The node logic lives in the collection sage.cluster (plugins/module_utils/ray_node.py).
  - A worker's C(ray start) ends early, and fails, when its head's GCS stops accepting connections meanwhile,
    where Ray would retry for a minute or more.
  - The module runs every command as an argument list, no shell. O(query=status) starts no module on the node
    unless it must; see the notes.
  - The ray_node role passes every option from its variables (roles/ray_node/defaults/main.yml holds their
    defaults), so the options the role sets have no default of their own here.
extends_documentation_fragment:
  - sage.cluster.attributes
attributes:
  action:
    details:
      - The action plugin checks the options on the controller, and answers O(query=status) without a module when it
        can (see the notes).
  check_mode:
    details: Reports whether a start, stop or restart would change the node, and changes nothing.
  platform:
    details: Linux, with /proc.
options:
  state:
    description:
      - What the node should be; the role passes its C(ray_node_action) here when it is one of these.
      - V(start) starts Ray unless it already runs joined to the head; V(stop) stops this user's Ray processes;
        V(restart) stops, then starts.
      - Needs O(ray_command), O(python_path), O(node_ip), O(head_host), O(head_port), O(temp_dir), O(log_dir) and
        O(timeout) to start (V(stop) needs none of them).
    type: str
    choices: [start, stop, restart]
  query:
    description:
      - What to ask the node, changing nothing; the role passes its C(ray_node_action) here when it is one of these.
      - V(status) reports the node (with O(cluster_view) on a head, Ray's node table too); V(logs) adds the last
        O(log_lines) lines of the node log (needs O(log_dir), O(log_lines)); V(doctor) adds read-only checks
        (executables, versions, writable dirs, the head's ports, the node's clock; needs O(ray_command),
        O(python_path), O(temp_dir), O(log_dir)).
      - V(wait) (head only) waits up to O(timeout) seconds until every IP in O(wait_for) is alive in Ray (needs
        O(python_path), O(wait_for), O(timeout)).
    type: str
    choices: [status, logs, wait, doctor]
  node_type:
    description:
      - Whether this node is the head (runs the GCS and the dashboard) or a worker.
      - A head needs O(head_host), O(head_port), O(dashboard_host) and O(dashboard_port) for every state and query.
    type: str
    required: true
    choices: [head, worker]
  ray_command:
    description:
      - The ray executable on the node. V(auto) is the C(ray) beside O(python_path) (the detected one, when that
        is V(auto) too).
    type: path
  python_path:
    description:
      - The Python of the env Ray runs in. Its directory goes first on PATH; it runs the node-table and version
        queries.
      - V(auto) finds it on the node (module_utils/detect_env.py), as the conda env O(conda_env) (V(base) is a base
        itself) in conda's own base (C(CONDA_EXE), or C(conda) on the login PATH), then in C(~/miniconda3),
        C(~/anaconda3), C(~/miniforge3), C(~/mambaforge), C(/opt/conda), C(/opt/miniconda3), C(/opt/anaconda3);
        without one, the first C(python3) on the login PATH that imports Ray (no conda variables then).
      - What was found is kept in C(~/.sage/env.json) until that Python stops existing, and reported as
        C(sage.python_path) and C(sage.ray_command). When nothing is found, starting and waiting fail with one
        line naming where it looked; V(doctor) reports it; V(stop) does not need it.
    type: path
  conda_env:
    description:
      - Conda env name for CONDA_DEFAULT_ENV (CONDA_PREFIX is the env of O(python_path)); unset or empty for none.
      - With O(python_path=auto), the env looked for.
    type: str
  python_version_match:
    description:
      - How alike the nodes' Pythons must be, as Ray's C(RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL) in the environment
        of C(ray start) and so of everything it starts, job drivers included. V(minor) lets 3.11.2 and 3.11.7 form
        one cluster; V(patch) is Ray's own default (the same patch release everywhere). Unset, Ray's default.
    type: str
    choices: [minor, patch]
  ray_version:
    description:
      - The Ray release this node must have to start. A start on a node whose env (the C(ray-*.dist-info) beside
        O(python_path), read without starting Python) holds another fails at once, naming both and
        C(sage cluster provision). The action plugin fills in the controller's release when it is unset or empty;
        a controller without Ray, or an env whose Ray is not found there, is not checked.
    type: str
  node_ip:
    description: This node's address for Ray (--node-ip-address), an IP or a name resolved on the node.
    type: str
  head_host:
    description: Host name or IP of the head, resolved on the node; workers join O(head_host):O(head_port).
    type: str
  head_port:
    description: Ray's GCS port on the head.
    type: int
  dashboard_host:
    description: Address the head's dashboard binds to; V(0.0.0.0) or V(::) means every interface.
    type: str
  dashboard_port:
    description: The head's dashboard port.
    type: int
  temp_dir:
    description: Ray's temp dir on this node (--temp-dir), created when missing.
    type: path
  log_dir:
    description: Dir of the node log C(<node_type>.log), where the output of C(ray start) is appended.
    type: path
  log_lines:
    description: Lines of the node log that O(query=logs) returns.
    type: int
  cluster_view:
    description: Head only. Add Ray's node table (alive nodes, resources) to the result, as C(sage.cluster).
    type: bool
    default: false
  wait_for:
    description: Node IPs that must be alive in Ray's node table before O(query=wait) succeeds.
    type: list
    elements: str
  blocked_by:
    description:
      - Not empty, the node is not touched and the task fails with this line. The action plugin answers on the
        controller; the module never sees it set.
    type: str
  timeout:
    description: Bound in seconds on one C(ray start) and on O(query=wait).
    type: int
  auth_token:
    description:
      - The Ray auth token. Set, the node starts with RAY_AUTH_MODE=token and keeps the token in
        O(auth_token_path); unset, with RAY_AUTH_MODE=disabled.
    type: str
  auth_token_file:
    description:
      - A file on the controller holding the Ray auth token, as O(auth_token) takes it. The action plugin reads it on
        the controller and passes the token on as O(auth_token); a file that does not exist it creates first (a new
        random token, mode 0600, its dir 0700), so that a run of ansible-playbook needs no earlier step to make one.
      - Mutually exclusive with O(auth_token).
    type: str
  auth_token_make:
    description:
      - Whether the action plugin makes a missing O(auth_token_file) (unset, it does). V(false) fails the task
        instead, for runs that must use the cluster's existing token (AWX, whose jobs start on a fresh filesystem).
    type: bool
  auth_token_path:
    description: Where the node keeps the token (mode 0600, its dir 0700).
    type: path
    default: ~/.ray/auth_token
  tls_ca_dir:
    description:
      - A dir on the controller holding the cluster's CA (C(ca.key), C(ca.crt)). Set, the node runs Ray with mutual TLS
        (C(RAY_USE_TLS=1) and the three C(RAY_TLS_*) paths, in O(tls_node_dir)). The action plugin makes the CA when it
        is missing (the key 0600, the dir 0700; it never leaves the controller) and passes its cert as
        O(tls_ca_cert).
      - On a start, the action plugin reads the node's certificate (no module) and keeps it when the CA signed it,
        it covers the node's addresses (O(node_ip), the inventory name, C(ansible_host), 127.0.0.1, localhost) and
        it has more than 30 days left; else it makes a new key and 90-day certificate on the controller, in memory,
        and passes them as O(tls_key) and O(tls_cert). V(query=doctor) reports the certificate as C(sage.doctor.tls).
      - One PEM file holding the CA's cert and key may stand in for the dir (read, never made; AWX's C(sage TLS CA)
        credential writes one).
      - Mutually exclusive with O(tls_ca_cert).
    type: str
  tls_make:
    description:
      - Whether the action plugin makes a missing CA in O(tls_ca_dir) (unset, it does). V(false) fails the task
        instead (AWX, whose jobs start on a fresh filesystem, where the CA comes from a credential).
    type: bool
  tls_renew:
    description:
      - Whether a start gives the node a new key and certificate even where its own still does (C(sage cluster tls
        rotate)). A head that gets one (from the same CA) restarts on its GCS store, as after a loss; a new CA or a
        new token restarts it as a new cluster.
    type: bool
  tls_node_dir:
    description:
      - Where the node keeps C(ca.crt), its C(node.crt) and C(node.key) (0600; the dir 0700). Required with
        O(tls_ca_dir) or O(tls_ca_cert); given without them, a start removes the old key and certificate there.
    type: path
  tls_ca_cert:
    description:
      - The CA's certificate (PEM). Set, the node runs Ray with mutual TLS; unset, with C(RAY_USE_TLS=0), and a start
        removes the node's old key and certificate (restarting a Ray that ran with them).
    type: str
  tls_cert:
    description: The node's new certificate (PEM), written to O(tls_node_dir) where it differs; a changed one
      restarts a running Ray (Ray reads its certificates only at start). Unset, the node keeps its own.
    type: str
  tls_key:
    description: The node's new private key (PEM), written with mode 0600; given with a new O(tls_cert) only.
    type: str
  deploy_record:
    description: The node's deploy record written by sage_deploy; V(status) and V(doctor) report it as
      C(sage.deploy). Unset, not read.
    type: path
  source_revision:
    description: The controller's source revision; a deploy record with another one is reported stale. Unset or
      empty, no comparison.
    type: str
  num_cpus:
    description: CPUs Ray offers on this node (ray start --num-cpus); unset, Ray counts them.
    type: int
  num_gpus:
    description: GPUs Ray offers on this node (ray start --num-gpus); unset, Ray counts them.
    type: int
  memory:
    description: Bytes of memory for tasks and actors (ray start --memory); unset, Ray decides.
    type: int
  object_store_memory:
    description: Bytes of object store (ray start --object-store-memory); unset, Ray decides.
    type: int
  resources:
    description: Custom resources of this node, name -> amount (ray start --resources); unset or empty for none.
    type: dict
  labels:
    description: Ray node labels of this node, key -> value (ray start --labels); unset or empty for none.
    type: dict
  fault_tolerance:
    description:
      - Where the head's GCS keeps its tables. V(none), its memory (a lost head ends the cluster); V(local), Ray's
        embedded store (RocksDB, alpha in Ray) in O(gcs_storage_dir) (needs O(gcs_storage_dir)); V(redis), the
        Redis at O(redis_address) (needs O(redis_address)). Both need O(gcs_namespace) and O(gcs_reconnect_timeout).
      - On, O(state=start) on a head whose GCS is gone (its raylet or dashboard left, or nothing left) ends what is
        left of its Ray and starts it on the same store; a worker whose raylet still runs on the head's address is
        left alone while it reconnects. A head's start writes C(~/.sage/ray_head_started) and its stop removes it;
        a start without it (a stopped cluster, or the first) empties the store first.
      - On a worker, its raylet waits O(gcs_reconnect_timeout) seconds for a lost head.
      - Unset, V(none).
    type: str
    choices: [none, local, redis]
  gcs_storage_dir:
    description:
      - With O(fault_tolerance=local), the store's directory on the head, made 0700; Ray's store is its C(rocksdb)
        directory (RAY_gcs_storage_path), the only thing a start of a stopped cluster empties.
    type: path
  redis_address:
    description: With O(fault_tolerance=redis), the Redis (RAY_REDIS_ADDRESS), C(host:port), C(redis://host:port) or C(rediss://host:port).
    type: str
  redis_password:
    description:
      - With O(fault_tolerance=redis), the Redis password (user C(default)); unset for none. Ray itself passes it
        to C(ray start) and on C(gcs_server)'s command line, where this user and root can read it in /proc.
    type: str
  gcs_namespace:
    description: The cluster's own keys in the store (RAY_external_storage_namespace), so clusters sharing a Redis
      never mix.
    type: str
  gcs_reconnect_timeout:
    description: With fault tolerance on, the seconds a worker's raylet waits for a lost head
      (RAY_gcs_rpc_server_reconnect_timeout_s).
    type: int
  supervisor:
    description:
      - Who keeps Ray running. V(auto), a systemd user unit (C(~/.config/systemd/user/sage-ray.service), linger
        enabled) where the node's PID 1 is systemd and C(systemctl --user) works (with O(become), a system unit
        where PID 1 is systemd), else plain processes; V(systemd), the unit or a failed start saying why; V(none),
        plain processes. Unset, V(auto).
      - The unit runs the same C(ray start) with C(--block), C(Restart=on-failure), no start limit; every value of
        its environment (the Redis password too) is in C(~/.sage/ray-node.env), mode 0600, never in the unit.
      - O(state=start) moves a node between plain processes and the unit, stopping the other kind first;
        O(state=stop) stops and disables the unit (a stopped node stays stopped through a reboot).
    type: str
    choices: [auto, systemd, none]
  become:
    description:
      - Whether the SSH user may become root with C(sudo -n) (sudo without a password) on this node. V(true), where
        O(supervisor) gives a node systemd, the unit is a system unit, C(/etc/systemd/system/sage-ray.service) with
        C(User=) the SSH user (C(WantedBy=multi-user.target), after C(network-online.target)); no linger needed.
      - The module still runs as the SSH user, and so does Ray; only the unit file (C(sudo -n install)) and the
        system manager's changes (C(sudo -n systemctl)) run as root, as argument lists. The env file stays the SSH
        user's (mode 0600).
      - V(true) where C(sudo -n) fails (it asks for a password, or there is no sudo) fails the start with one line
        saying how to fix it. Moving between a user unit, a system unit and plain processes is one O(state=start),
        which stops, disables and removes the other kind's unit first (a system unit's removal needs C(sudo -n)).
      - Unset, V(false).
    type: bool
notes:
  - O(query=status) runs without a module on the node when it can. The action plugin (plugins/action/sage_ray_node.py)
    runs one fixed POSIX sh command through the connection's shell (C(/bin/sh -c), Ansible's executable); it lists
    this user's processes from /proc (the module's own rule decides which are Ray) and prints the deploy record;
    on a head with O(cluster_view) it also runs O(python_path) with a standard-library snippet that asks the
    dashboard's state API. Only paths are put into that command, quoted; the dashboard's URL and O(auth_token) go
    on its stdin. When a running head's dashboard gives no table, the module runs instead and asks Ray's GCS.
  - With O(python_path) or O(ray_command) V(auto), the probe prints what this module found and kept on the node
    (C(~/.sage/env.json)), while its Python exists, and a head's snippet runs with that Python; without such a
    finding (the first time, or after the env moved) the module runs instead and finds them.
  - Every other state and query runs this module. Right after a stop, processes may linger as zombies for a
    moment; a zombie is not counted as a running Ray.
"""

EXAMPLES = r"""
- name: Start the head
  sage_ray_node:
    state: start
    node_type: head
    ray_command: /opt/conda/envs/sage/bin/ray
    python_path: /opt/conda/envs/sage/bin/python
    conda_env: sage
    node_ip: "{{ inventory_hostname }}"
    head_host: base-sage
    head_port: 6379
    dashboard_host: 0.0.0.0
    dashboard_port: 8265
    temp_dir: /tmp/ray_head
    log_dir: /tmp/sage_head_logs
    timeout: 90
    labels: {zone: a}
    auth_token_file: ~/.sage/ray_auth_token
  register: ray_node_result

- name: Stop a worker
  sage_ray_node:
    state: stop
    node_type: worker

- name: Whether Ray runs on a worker, and what was deployed there
  sage_ray_node:
    query: status
    node_type: worker
    deploy_record: ~/.sage/deploy.json

- name: Wait on the head until the started workers are alive
  sage_ray_node:
    query: wait
    node_type: head
    head_host: base-sage
    head_port: 6379
    dashboard_host: 0.0.0.0
    dashboard_port: 8265
    python_path: /opt/conda/envs/sage/bin/python
    wait_for: ["10.0.0.12", "10.0.0.14"]
    timeout: 90
"""

RETURN = r"""
sage:
  description:
    - This node as it is after the state or query; the module and the status probe build it with one function
      (module_utils/ray_node.py, node_report). Returned on success and on failure (then with what could be
      read), so plays that read it never meet a missing key. playbooks/wait.yml waits for the workers whose C(running)
      is true, at their C(node_ip); sage's runner shows these keys per host.
  returned: always
  type: dict
  contains:
    running:
      description: Whether this user's raylet runs on the node.
      type: bool
      returned: always
    node_ip:
      description: The raylet's node IP address, or null when Ray does not run.
      type: str
      returned: always
    node_id:
      description: The running raylet's Ray node ID (hex), or null; status matches it against Ray's alive nodes, since
        a restarted raylet's old node keeps the IP until Ray drops it.
      type: str
      returned: always
    raylet_pid:
      description: The raylet's process ID on the node, or null.
      type: int
      returned: always
    gcs_address:
      description: The GCS address (ip:port) the raylet is joined to, or null.
      type: str
      returned: always
    gcs_port:
      description: The GCS port of the gcs_server on this node (a running head), or null.
      type: int
      returned: always
    raylet_state:
      description: The raylet's process state in /proc (T or t is stopped, not working), as the status probe reads
        it; null when the module answers or no raylet runs.
      type: str
      returned: always
    raylet_answers:
      description: Whether the raylet's gRPC server answered HTTP/2's preface (on a port it listens on, through TLS
        with its own files where it runs with TLS), as the status probe asks it; null when not asked (the module
        answers, no raylet runs, or it is stopped). false fails the status row. A start asks too, and fails the
        host with the reason in C(msg) when it does not answer.
      type: bool
      returned: always
    raylet_health:
      description: Why the raylet did not answer (its port, and a timeout or the socket's error), else null.
      type: str
      returned: always
    pids:
      description: This user's Ray processes on the node.
      type: list
      elements: int
      returned: always
    node_type:
      description: O(node_type).
      type: str
      returned: always
    log_file:
      description: The node log, C(<log_dir>/<node_type>.log).
      type: str
      returned: with O(log_dir)
    log:
      description: The last O(log_lines) lines of the node log.
      type: list
      elements: str
      returned: O(query=logs)
    doctor:
      description:
        - Read-only checks. C(time), the node's clock (epoch seconds); C(python_path), C(ray_command), C(temp_dir),
          C(log_dir) each as C({ok, detail}); C(temp_dir_space), C(log_dir_space) as C({ok, warn, detail}) (free
          space against the limits of module_utils/ray_node.py); C(versions) as C({python, ray}) or C({error}); on
          the head, C(ports), each head port as C({ok, detail}) (free, or held by this cluster's Ray).
        - C(supervisor) as C({ok, warn, detail, fix}), what O(state=start) would give the node (systemd or none, and
          why; failed when O(supervisor=systemd) cannot be had) and what runs it now where that differs. Linger is
          only read, a warning while it is off (the start turns it on, where the node allows).
        - C(temp_dir_cleanup), C(log_dir_cleanup) as C({ok, warn, detail, fix}), on a node whose PID 1 is systemd a
          warning when a tmpfiles.d age rule (Debian 13's /tmp, 10 days) deletes old files there and no C(x) line
          excludes the dir (module_utils/tmpfiles.py).
      type: dict
      returned: O(query=doctor)
    python_path:
      description: The Python the node uses; with O(python_path=auto) the one found (still V(auto) when none was).
      type: str
      returned: when O(python_path) is set
      sample: /home/sage/miniconda3/envs/sage/bin/python
    ray_command:
      description: The ray executable the node uses; with O(ray_command=auto) the one found.
      type: str
      returned: when O(ray_command) is set
    declared:
      description: The resources and labels this node was started with (O(num_cpus) ... O(labels) that are set).
      type: dict
      returned: always
    deploy:
      description: What sage_deploy recorded on the node, as C({revision, install_ok, stale}).
      type: dict
      returned: O(query=status) or O(query=doctor), with O(deploy_record) set
    cluster:
      description:
        - Ray's node table from the head, as C({alive, nodes, resources}); each node C({node_ip, hostname, alive,
          is_head, resources}); C(resources) sums the alive nodes'. C({error}) when the table cannot be read.
      type: dict
      returned: O(query=wait), or O(cluster_view) on a running head
    dashboard_url:
      description: The dashboard's URL; a dashboard bound to every interface is given at O(head_host).
      type: str
      returned: head only
      sample: http://base-sage:8265
    fault_tolerance:
      description: Where the head's GCS keeps its tables, as C({mode, store, namespace}).
      type: dict
      returned: head only, with O(fault_tolerance) local or redis
    supervisor:
      description:
        - Who keeps Ray running here, as C({kind, text, unit}); C(kind) V(systemd) or V(none); C(text) in words, e.g.
          "systemd (user unit, linger on)" or "systemd (system unit)", or for V(none) why not (PID 1 is not systemd,
          the config); C(unit), when there is a unit file, C({name, scope, active_state, sub_state, enabled,
          restarts}), C(scope) V(user) or V(system).
      type: dict
      returned: success
    note:
      description: What a start found and did beyond starting, e.g. a head healed on its store, a worker restarted.
      type: str
      returned: when a start had something to say
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sage.cluster.plugins.module_utils import tmpfiles
from ansible_collections.sage.cluster.plugins.module_utils.detect_env import AUTO, NotFound, resolve_here
from ansible_collections.sage.cluster.plugins.module_utils.node import (
    HEAD_STARTED, RAY_DRIFT, port_free, read_json, run_logged, tail, telling_line, versions)
from ansible_collections.sage.cluster.plugins.module_utils.ray_node import (
    ARGUMENT_RULES, ARGUMENT_SPEC, OLD_NODE_GRACE, PYTHON_MATCH_ENV, STOPPED_STATES, alive_count_note,
    alive_per_host, cluster_summary, counted, fault_tolerance_env, free_space, head_without_gcs, health_argv, log_file,
    nearest_existing, no_space, node_report, node_state, parse_health, process_age, process_states, ray_drift,
    ray_processes, raylet_not_working, redis_args, redis_ping, resource_args, rocksdb_path, start_argv, state_api_argv,
    state_api_input, state_api_nodes, terminate, tls_env, tls_paths, tls_refusal, TLS_VARIABLES)
from ansible_collections.sage.cluster.plugins.module_utils.sage_env import (
    env_prefix, installed_ray, node_env, unwritable)
from ansible_collections.sage.cluster.plugins.module_utils.supervisor import (
    ENV_PATH, PROPERTIES, RUNNING_STATES, SUDO, UNIT, UNIT_FACTS, UNIT_PATHS, as_owner, choose, describe, doctor_check,
    env_text, linger_path, parse_show, sudo_refused, systemctl_argv, under_unit, unit_on, unit_text)

# Ask Ray's GCS for its node table: no driver, no job.
NODES_SNIPPET = r"""
import json, sys
from ray._raylet import GcsClient
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps([{"node_ip": n.node_manager_address, "node_id": n.node_id.hex(), "hostname": n.node_manager_hostname,
                   "alive": n.state == 0, "is_head": n.is_head_node,
                   "resources": {k: v for k, v in n.resources_total.items() if not k.startswith("node:")},
                   "labels": {k: v for k, v in n.labels.items() if not k.startswith("ray.io/")}}
                  for n in nodes]))
"""


# Empty a Redis store of this cluster's keys (Ray's own cleanup, as KubeRay's): reads {address, password, namespace}
# as JSON on stdin, so the password is in no process's arguments.
REDIS_CLEANUP_SNIPPET = r"""
import json, sys
from ray._private.gcs_utils import cleanup_redis_storage
from ray._private.services import get_address
ask = json.load(sys.stdin)
host, port, tls = get_address(ask["address"])
cleanup_redis_storage(host, int(port), ask["password"], tls, ask["namespace"], username="default")
"""

# The unit's PATH before the env's bin directory: a user manager's own PATH is not the login's.
UNIT_BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def read_text(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def write_file(path, text, mode):
    """Write text to path atomically with mode (its directory made 0700 when missing)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# A worker's raylet that outlived its head reconnects to a healed one within seconds; this long it is given.
RECONNECT_GRACE = 30
# A raylet younger than this may still be registering with its GCS (a unit's restart, a start just done): wait for it.
JOIN_GRACE = 20


def current_state(health=None):
    procs = ray_processes()
    return node_state(procs, process_states(procs), health)


class Node:
    def __init__(self, module):
        self.m = module
        self.p = module.params
        self.p["fault_tolerance"] = self.p["fault_tolerance"] or "none"
        self.p["supervisor"] = self.p["supervisor"] or "auto"
        self.p["become"] = bool(self.p["become"])
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.asked = {k: self.p[k] for k in ("python_path", "ray_command")}
        self.not_found = self.find_paths()
        self.notes = []  # what a start found and did, for the report
        self.renewed = False  # a head stopped for its new certificate, not lost

    def find_paths(self):
        """Put the paths this node has in place of `auto` ones; the line saying why when nothing was found."""
        p = self.p
        try:
            found = resolve_here(p["python_path"], p["ray_command"], p["conda_env"])
        except NotFound as exc:
            return str(exc)
        p.update(python_path=found["python_path"], ray_command=found["ray_command"], conda_env=found["conda_env"])
        return None

    def need_paths(self):
        if self.not_found:
            self.fail(self.not_found)

    def fail(self, msg, kind=None, **extra):
        # The same report as on success, so plays that read the results never meet a missing key.
        self.m.fail_json(msg=msg, sage=node_report(self.p, current_state(), **extra),
                         **({"kind": kind} if kind else {}))

    def resolve(self, name, what):
        try:
            return socket.gethostbyname(name)
        except OSError as exc:
            self.fail(f"cannot resolve {what} {name!r} on this host: {exc}")

    def env(self, base=None):
        """The env of `ray start`: this process's (base None), or base's only (the unit's)."""
        env = node_env(self.p["python_path"], self.p["conda_env"], base)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env.update(fault_tolerance_env(self.p))
        if self.p["auth_token"]:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=self.p["auth_token_path"])
        else:  # explicit: Ray would turn auth on by itself if it found an old token file
            env["RAY_AUTH_MODE"] = "disabled"
            env.pop("RAY_AUTH_TOKEN", None)
        if self.p["tls_ca_cert"]:
            paths = tls_paths(self.p["tls_node_dir"])
            env.update(tls_env(paths["ca"], paths["cert"], paths["key"]))
        else:  # explicit, like the token's: not a driver's RAY_USE_TLS from the SSH user's profile
            env["RAY_USE_TLS"] = "0"
            for name in TLS_VARIABLES:
                env.pop(name, None)
        if self.p["python_version_match"]:
            env[PYTHON_MATCH_ENV] = self.p["python_version_match"]
        return env

    def run_python(self, *args):
        """(stdout, None) of the node's Python running args, or (None, the telling line of its failure)."""
        proc = subprocess.run([self.p["python_path"], *args], capture_output=True, text=True, env=self.env(),
                              timeout=60, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            return None, telling_line(proc.stderr.splitlines())
        return proc.stdout, None

    def install_token(self):
        """Write the token 0600 (dir 0700) when it differs; True when the file changed."""
        token, path = self.p["auth_token"], self.p["auth_token_path"]
        if not token:
            return False
        try:
            with open(path) as fh:
                if fh.read().strip() == token and os.stat(path).st_mode & 0o077 == 0:
                    return False
        except OSError:
            pass
        if self.m.check_mode:
            return True
        write_file(path, token + "\n", 0o600)
        return True

    def install_tls(self):
        """The node's TLS files as the action plugin gave them, written where they differ (TLS off: its old key and
        cert removed). What changed, so that a running Ray restarts on them: None, "leaf" (a new key and cert of the
        CA this node already had: its peers still trust it) or "all"."""
        p = self.p
        if not p["tls_node_dir"]:
            return None
        paths = tls_paths(p["tls_node_dir"])
        if not p["tls_ca_cert"]:
            old = [paths[role] for role in ("key", "cert") if os.path.exists(paths[role])]
            if not self.m.check_mode:
                for path in old:
                    os.remove(path)
            return "all" if old else None
        want = {"ca": (p["tls_ca_cert"], 0o644)}
        if p["tls_cert"]:
            want["cert"] = (p["tls_cert"], 0o644)
        if p["tls_key"]:
            want["key"] = (p["tls_key"], 0o600)
        changed = [role for role, (text, mode) in want.items()
                   if read_text(paths[role]) != text or os.stat(paths[role]).st_mode & 0o777 != mode]
        if changed and not self.m.check_mode:
            os.makedirs(p["tls_node_dir"], mode=0o700, exist_ok=True)
            os.chmod(p["tls_node_dir"], 0o700)
            for role in changed:
                write_file(paths[role], want[role][0], want[role][1])
        if not changed:
            return None
        return "all" if "ca" in changed else "leaf"

    def check_executables(self):
        for key in ("ray_command", "python_path"):
            path = self.p[key]
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                self.fail(f"{key} {path} is not an executable file on this host (config remote.{key})")

    @property
    def log_file(self):
        return log_file(self.p["log_dir"], self.p["node_type"])

    def head_address(self):
        return f"{self.resolve(self.p['head_host'], 'head host')}:{self.p['head_port']}"

    def joined(self, state):
        """Whether this node's running Ray belongs to the configured cluster (a stopped raylet works for none)."""
        if not state["running"] or raylet_not_working(state):
            return False
        if self.p["node_type"] == "head":
            return state["gcs_port"] == self.p["head_port"]
        if state["gcs_address"] != self.head_address():
            return False
        # A raylet can outlive its head (e.g. after a head restart): ask the head whether it counts this node. With
        # fault tolerance a healed head takes it back: give it the time to reconnect while it still runs; a young
        # raylet (systemd just restarted it) the time to register.
        age = process_age(state["raylet_pid"])
        grace = max(RECONNECT_GRACE if self.p["fault_tolerance"] != "none" else 0,
                    JOIN_GRACE - age if age is not None else 0)
        deadline = time.monotonic() + grace
        while True:
            if self.counted_by_ray(state):
                return True
            if time.monotonic() >= deadline or not current_state()["running"]:
                return False
            time.sleep(1)

    def counted_by_ray(self, state):
        """Whether Ray counts this node's running raylet (not an old node of the same IP) alive."""
        nodes, _ = self.cluster_nodes(state)
        return counted(nodes or [], state["node_ip"], state["node_id"])

    def head_unreachable(self):
        """Why the head's GCS does not accept a connection from here, or None when it does."""
        host, _, port = self.head_address().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            return f"the head {host}:{port} does not accept connections ({exc.strerror or exc})"
        return None

    def check_head_reachable(self):
        """Fail in seconds, not after Ray's own long retries, when the head does not answer, or (TLS on) refuses
        this node's certificate."""
        why = self.head_unreachable()
        if why:
            self.fail(f"{why}; start it first (sage head start)")
        if self.p["tls_ca_cert"]:
            host, _, port = self.head_address().rpartition(":")
            if why := tls_refusal(host, port, tls_paths(self.p["tls_node_dir"])):
                self.fail(f"not started: {why}. Fix: start it from the machine that holds the cluster's CA "
                          "(`sage cluster start` there gives it a certificate of that CA)")

    def doctor(self, state):
        """Read-only checks of this node; the controller compares versions and clocks across nodes."""
        p = self.p
        checks = {"time": time.time()}
        for key in ("python_path", "ray_command"):
            path = p[key]
            ok = not self.not_found and os.path.isfile(path) and os.access(path, os.X_OK)
            detail = self.not_found or path
            checks[key] = {"ok": ok, "detail": f"auto: {detail}" if self.asked[key] == AUTO else detail}
        if checks["python_path"]["ok"]:
            found, err = versions(p["python_path"], self.env())
            checks["versions"] = found if err is None else {"error": err}
            why = unwritable(p["python_path"])
            checks["env_writable"] = {"ok": why is None, "detail": why or f"{env_prefix(p['python_path'])} is writable"}
        facts = self.supervisor_facts()
        errors = self.supervisor_errors(p["supervisor"], facts, turn_linger_on=False)
        checks["supervisor"] = doctor_check(p["supervisor"], facts, errors, self.user, socket.gethostname(),
                                            p["become"])
        rules = tmpfiles.parse(tmpfiles.config_text()) if facts["pid1"] == "systemd" else []
        for key in ("temp_dir", "log_dir"):
            checks[key] = self.writable(p[key])
            checks[f"{key}_space"] = free_space(p[key])
            checks[f"{key}_cleanup"] = tmpfiles.check(p[key], rules, facts["pid1"], f"{p['node_type']}.{key}")
        if p["node_type"] == "head":
            checks["ports"] = {str(port): self.port_state(port, state)
                               for port in (p["head_port"], p["dashboard_port"])}
            if p["fault_tolerance"] == "local":
                checks["gcs_store"] = self.writable(p["gcs_storage_dir"])
            elif p["fault_tolerance"] == "redis":
                why = redis_ping(p["redis_address"], p["redis_password"])
                checks["gcs_store"] = {"ok": why is None,
                                       "detail": f"Redis {p['redis_address']}: {why or 'answers PING'}"}
        return checks

    @staticmethod
    def writable(path):
        """Whether this user can write path, or make it in its nearest existing parent."""
        probe = nearest_existing(path)
        ok = os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)
        return {"ok": ok, "detail": path if probe == path else f"{path} (to be created in {probe})"}

    def port_state(self, port, state):
        if port_free(port):
            return {"ok": True, "detail": "free"}
        if state["running"] and (state["gcs_port"] == port or port == self.p["dashboard_port"]):
            return {"ok": True, "detail": "held by this cluster's Ray"}
        return {"ok": False, "detail": "in use by another process"}

    def start_argv(self):
        p = self.p
        ip = self.resolve(p["node_ip"], "node address")
        if p["node_type"] == "head":
            return start_argv(p["ray_command"], "head", ip, p["temp_dir"], head_port=p["head_port"],
                              dashboard_host=p["dashboard_host"], dashboard_port=p["dashboard_port"],
                              resources=resource_args(p) + redis_args(p))
        return start_argv(p["ray_command"], "worker", ip, p["temp_dir"], head_address=self.head_address(),
                          resources=resource_args(p))

    @staticmethod
    def run(argv, text=None):
        """argv, text on its stdin: (ok, its stdout, or the telling line of its failure)."""
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")  # a session without it: the usual place
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                                  **({"input": text} if text is not None else {"stdin": subprocess.DEVNULL}))
        except OSError as exc:  # no such program (sudo, say)
            return False, str(exc)
        return proc.returncode == 0, proc.stdout if proc.returncode == 0 else telling_line(proc.stderr.splitlines())

    def must_run(self, argv, text=None):
        ok, out = self.run(argv, text)
        if not ok:
            self.fail(f"{' '.join(argv)} failed: {out}")

    def systemctl(self, scope, *args):
        """A read of scope's manager (supervisor.systemctl_argv): (ok, output or why not)."""
        return self.run(systemctl_argv(scope, *args))

    def must_systemctl(self, scope, *args):
        """A change to scope's manager (the system's as root), or the node fails."""
        self.must_run(systemctl_argv(scope, *args, change=True))

    def sudo_error(self):
        """Why this user cannot run sudo without a password here (None: it can)."""
        ok, out = self.run([*SUDO, "true"])
        return None if ok else out

    def supervisor_facts(self):
        """What status reads too (module_utils/supervisor.py): PID 1's name, linger, each unit's properties."""
        facts = {"pid1": (read_text("/proc/1/comm") or "").strip(), "linger": os.path.exists(linger_path(self.user))}
        for scope, key in UNIT_FACTS.items():
            facts[key] = None
            if os.path.isfile(os.path.expanduser(UNIT_PATHS[scope])):
                ok, out = self.systemctl(scope, "show", *(f"--property={p}" for p in PROPERTIES), UNIT)
                facts[key] = parse_show(out) if ok else {}
        return facts

    def choose_supervisor(self):
        """A system unit, a user unit or none for this node (supervisor.choose); turns linger on for a user unit where
        it is off and allowed."""
        asked, facts = self.p["supervisor"], self.supervisor_facts()
        errors = self.supervisor_errors(asked, facts, turn_linger_on=not self.m.check_mode)
        kind, why = choose(asked, facts["pid1"], self.user, socket.gethostname(), self.p["become"], **errors)
        if kind == "fail":
            self.fail(why)
        return kind, facts

    def supervisor_errors(self, asked, facts, turn_linger_on):
        """What keeps this node from the unit it would get (supervisor.choose's keywords): with ssh.become, why sudo
        fails; else why the user manager does not answer and, where linger is off and turn_linger_on, why it could
        not be turned on."""
        if asked == "none" or facts["pid1"] != "systemd":
            return {}
        if self.p["become"]:
            return {"sudo_error": self.sudo_error()}
        ok, out = self.systemctl("user", "show", "--property=Version")
        errors = {"manager_error": None if ok else out}
        if ok and not facts["linger"] and turn_linger_on:
            ok, out = self.run(["loginctl", "enable-linger"])
            errors["linger_error"] = None if ok else out
        return errors

    def start(self, state):
        self.need_paths()
        if state["running"] and state["raylet_state"] not in STOPPED_STATES:
            # Ray may count a raylet that does not answer (frozen, hung in the kernel) for a minute: not started. It
            # cannot be replaced either (a frozen process does not die): say so.
            ok, out = self.run(health_argv(self.p["python_path"], [state["raylet_pid"]]))
            if why := raylet_not_working(current_state(parse_health(out) if ok else {})):
                self.fail(why)
        kind, facts = self.choose_supervisor()
        for scope, key in UNIT_FACTS.items():  # a unit of the kind not chosen goes first: never Ray twice
            if facts[key] is not None and scope != kind:
                state = self.leave_unit(state, scope, kind)
        if kind != "none":
            return self.start_unit(state, kind, facts[UNIT_FACTS[kind]] or {})
        if self.joined(state):
            return False, state
        if self.m.check_mode:
            return True, state
        self.check_executables()
        if why := ray_drift(self.p["ray_version"], installed_ray(self.p["python_path"])):
            self.fail(why, kind=RAY_DRIFT)
        if self.p["node_type"] == "worker":
            self.check_head_reachable()
            if state["pids"]:
                what = ("its raylet was stopped (SIGSTOP or a debugger)" if raylet_not_working(state)
                        else "its Ray was not part of the cluster (a new head does not know it)" if state["running"]
                        else "its raylet had died (what was left of its Ray ended)")
                self.notes.append(f"{what}: restarted, its tasks and actors lost")
        elif self.prepare_store(state):
            self.notes.append(self.lost_head_note())
        if state["pids"]:  # Ray from another cluster or config, or what is left of a lost head: replace it
            self.stop(state)
        # A worker whose head dies meanwhile (the head's own start failed, or it was stopped) gives up within a
        # second, where Ray would retry for a minute or more.
        os.makedirs(self.p["temp_dir"], mode=0o755, exist_ok=True)
        argv = self.start_argv()
        rc, cut, output = run_logged(argv, self.log_file, self.p["timeout"], " ".join(argv[1:3]), env=self.env(),
                                     gone=self.head_unreachable if self.p["node_type"] == "worker" else None)
        if rc != 0:
            terminate()  # leave no half-started Ray (a dashboard without a raylet) behind
            reason = telling_line(output.splitlines())
            if space := no_space(self.p["node_type"], self.p):
                reason = f"{space} (Ray said: {reason})"
            self.fail(f"ray start failed ({cut or f'exit {rc}'}): {reason} (log: {self.log_file})")
        if self.p["node_type"] == "head":
            self.mark_started(True)
        return True, current_state()

    def start_unit(self, state, scope, unit):
        """Start Ray as the unit of scope (user or system): write it and its env file where they differ, (re)start it
        where it changed or runs no joined Ray, enable it, and wait for its raylet (a head's GCS too)."""
        p = self.p
        unit_path, env_path = os.path.expanduser(UNIT_PATHS[scope]), os.path.expanduser(ENV_PATH)
        text, secret = unit_text(self.start_argv(), self.log_file, env_path, p["node_type"],
                                 run_as=self.user if scope == "system" else None)
        env = env_text({**self.env(base={"PATH": UNIT_BASE_PATH}), **secret})
        unit_changed = read_text(unit_path) != text
        env_changed = read_text(env_path) != env or os.stat(env_path).st_mode & 0o077 != 0
        active, enabled = unit.get("ActiveState") in RUNNING_STATES, unit.get("UnitFileState") == "enabled"
        plain = [pid for pid in state["pids"] if not under_unit(pid)]
        if not (unit_changed or env_changed or plain) and active and enabled and self.joined(state):
            return False, state
        did = [f"{'rewrote' if os.path.exists(unit_path) else 'wrote'} {scope} unit {UNIT}" if unit_changed else "",
               "its env file changed" if env_changed and not unit_changed else "",
               "stopped Ray's plain processes (moved to the systemd unit)" if plain else "",
               f"{'restarted' if active else 'started'} {UNIT}" + ("" if enabled else ", enabled at boot")]
        did = "; ".join(filter(None, did))
        if self.m.check_mode:
            self.notes.append("would have: " + did)
            return True, state
        self.notes.append(did)
        self.check_executables()
        if why := ray_drift(p["ray_version"], installed_ray(p["python_path"])):
            self.fail(why, kind=RAY_DRIFT)
        # Under the unit a start on a full disk would not fail: systemd would restart it every few seconds for good.
        if space := no_space(p["node_type"], p):
            self.fail(f"ray start not tried under {UNIT}: {space}")
        if p["node_type"] == "worker":
            self.check_head_reachable()
        elif self.prepare_store(state):
            self.notes.append(self.lost_head_note())
        if plain or active:
            terminate()  # Ray's processes first: gcs_server ignores the unit's SIGTERM while its clients live
        if active:
            self.stop_unit(scope)
        write_file(env_path, env, 0o600)  # the SSH user's, also for a system unit: systemd reads it as root
        if unit_changed:
            self.must_run(as_owner(scope, ["install", "-D", "-m", "0644", "/dev/stdin", unit_path]), text)
            self.must_systemctl(scope, "daemon-reload")
        self.must_systemctl(scope, "enable", UNIT)
        self.must_systemctl(scope, "start", UNIT)
        state = self.wait_unit(scope)
        if p["node_type"] == "head":
            self.mark_started(True)
        return True, state

    def wait_unit(self, scope):
        """This node's Ray state once the unit's raylet (a head's GCS too) runs; fails at the timeout, when the unit
        failed, or a worker's head stops answering."""
        p = self.p
        deadline = time.monotonic() + p["timeout"]
        while True:
            state = current_state()
            # A worker is up once Ray counts its new raylet: until then Ray may count only the node it replaced.
            if state["running"] and (self.counted_by_ray(state) if p["node_type"] == "worker"
                                     else state["gcs_port"] == p["head_port"]):
                return state
            why = self.head_unreachable() if p["node_type"] == "worker" else None
            if why is None and time.monotonic() > deadline:
                why = f"timed out after {p['timeout']} s"
            if why is None and self.systemctl(scope, "is-failed", "--quiet", UNIT)[0]:
                why = "the unit failed"
            if why:
                reason = telling_line(tail(self.log_file, 20))
                journal = " ".join(["journalctl", *(["--user"] if scope == "user" else []), "-u", UNIT])
                self.fail(f"Ray did not start under {UNIT} ({why}): {reason} (log: {self.log_file}; {journal})")
            time.sleep(0.5)

    def leave_unit(self, state, scope, kind):
        """A node with a unit of scope that is to run as kind (the other scope's unit, or none): stop Ray and
        disable the unit, remove it and its env file."""
        if scope == "system" and (error := self.sudo_error()):
            self.fail(sudo_refused(self.user, socket.gethostname(), error, leaving=True))
        to = "plain processes" if kind == "none" else f"a {kind} unit"
        did = f"stopped, disabled and removed {scope} unit {UNIT} (moved to {to})"
        if self.m.check_mode:
            self.notes.append("would have: " + did)
            return state
        self.notes.append(did)
        self.stop(state)
        self.must_run(as_owner(scope, ["rm", "-f", "--", os.path.expanduser(UNIT_PATHS[scope])]))
        if os.path.exists(os.path.expanduser(ENV_PATH)):
            os.remove(os.path.expanduser(ENV_PATH))
        self.must_systemctl(scope, "daemon-reload")
        return current_state()

    def lost_head_note(self):
        """What a start says of a head that was lost, not stopped (or stopped for its new certificate)."""
        mode = self.p["fault_tolerance"]
        if self.renewed:
            return ("restarted on its new certificate: " + ("a new cluster (fault tolerance off)" if mode == "none" else
                                                            f"on its store ({mode}), the workers reconnect"))
        if mode == "none":
            return ("the head was lost (not stopped): a new cluster started (fault tolerance off: the workers "
                    "restart, their tasks and actors lost)")
        return (f"healed: the head was lost (not stopped); what was left of its Ray ended, it started again on its "
                f"store ({mode}); the workers reconnect")

    def prepare_store(self, state):
        """Before a head starts: whether it was lost rather than stopped (HEAD_STARTED is there and no GCS runs; a
        GCS on another port is another config's). A lost head keeps its store, for the heal; a stopped cluster's
        store is emptied, so it never comes back half remembered. The local store's directory is made 0700."""
        p = self.p
        lost = os.path.exists(os.path.expanduser(HEAD_STARTED)) and state["gcs_port"] is None
        if not lost and p["fault_tolerance"] == "local":
            shutil.rmtree(rocksdb_path(p), ignore_errors=True)
        elif not lost and p["fault_tolerance"] == "redis":
            self.clear_redis()
        if p["fault_tolerance"] == "local":
            os.makedirs(rocksdb_path(p), mode=0o700, exist_ok=True)
            os.chmod(p["gcs_storage_dir"], 0o700)
        return lost

    def clear_redis(self):
        p = self.p
        ask = json.dumps({"address": p["redis_address"], "password": p["redis_password"] or "",
                          "namespace": p["gcs_namespace"]})
        proc = subprocess.run([p["python_path"], "-c", REDIS_CLEANUP_SNIPPET], input=ask, capture_output=True,
                              text=True, env=self.env(), timeout=60)
        if proc.returncode != 0:
            self.fail(f"cannot empty the stopped cluster's store in Redis {p['redis_address']}: "
                      f"{telling_line(proc.stderr.splitlines())}")

    @staticmethod
    def mark_started(started):
        """A head's start writes HEAD_STARTED, its stop removes it."""
        marker = os.path.expanduser(HEAD_STARTED)
        if started:
            os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
            with open(marker, "w"):
                pass
        elif os.path.exists(marker):
            os.remove(marker)

    def stop(self, state):
        """Stop this user's Ray; a unit is disabled first (so it does not restart it, nor start it at boot) and
        stopped after (its `ray start --block` outlives Ray's processes ended with SIGTERM)."""
        facts = self.supervisor_facts()
        units = [scope for scope, key in UNIT_FACTS.items() if unit_on(facts[key])]
        if not state["pids"] and not units:
            return False, state
        if not self.m.check_mode:
            for scope in units:
                self.must_systemctl(scope, "disable", UNIT)
            terminate()  # Ray's processes end gracefully, as without a unit
            for scope in units:
                self.stop_unit(scope)
        return True, current_state()

    def stop_unit(self, scope):
        """Stop the unit once terminate() has ended its Ray. Left is `ray start --block`, whose SIGTERM handler would
        first ask the GCS (gone by now) to drain the node, for up to Ray's 30 s: the stop job is queued (so no
        restart follows), then that parent is killed."""
        self.must_systemctl(scope, "stop", "--no-block", UNIT)
        self.run(systemctl_argv(scope, "kill", "--kill-whom=main", "--signal=SIGKILL", UNIT, change=True))
        self.must_systemctl(scope, "stop", UNIT)
        # Killed, the parent leaves the unit "failed" though nothing failed.
        if self.systemctl(scope, "is-failed", "--quiet", UNIT)[0]:
            self.must_systemctl(scope, "reset-failed", UNIT)

    def dashboard_nodes(self):
        """Ray's node table from the dashboard's state API, as the status probe asks it (module_utils)."""
        p = self.p
        proc = subprocess.run(state_api_argv(p["python_path"]), capture_output=True, text=True, timeout=30,
                              input=state_api_input(p["dashboard_host"], p["dashboard_port"], p["auth_token"]))
        return state_api_nodes(proc.stdout)

    def cluster_nodes(self, state):
        if self.p["node_type"] == "head" and state["gcs_port"] is not None:  # the dashboard answers while it runs
            nodes = self.dashboard_nodes()
            if nodes is not None:
                return nodes, None
        address = state["gcs_address"] or self.head_address()
        out, err = self.run_python("-c", NODES_SNIPPET, address)
        if err is not None:
            return None, f"cannot read Ray's node table at {address}: {err}"
        return json.loads(out), None

    def wait(self, state):
        if not state["running"]:
            self.fail("Ray is not running on the head: start it first (sage head start)")
        want = set(self.p["wait_for"])
        deadline = time.monotonic() + self.p["timeout"]
        grace = None  # when every host has its node: how long Ray may still list an old one
        while True:
            nodes, err = self.cluster_nodes(state)
            alive = {n["node_ip"] for n in nodes or [] if n["alive"]}
            missing = sorted(want - alive)
            if not missing and nodes is not None:
                grace = grace or min(deadline, time.monotonic() + OLD_NODE_GRACE)
                old = alive_per_host(nodes, want)
                if not old or time.monotonic() > grace:
                    if old:
                        self.notes += [f"{ip}: {alive_count_note(c)}" for ip, c in sorted(old.items())]
                    return cluster_summary(nodes)
            if time.monotonic() > deadline:
                self.fail(f"not alive in Ray after {self.p['timeout']} s: {', '.join(missing) or err}",
                          cluster=cluster_summary(nodes or []))
            time.sleep(0.25)  # a dashboard query is cheap: poll often, the start waits on this


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **ARGUMENT_RULES)
    node = Node(module)
    p = module.params
    want, query = p["state"], p["query"]
    state = current_state()
    changed = False
    if want in ("stop", "restart"):
        changed, state = node.stop(state)
        if p["node_type"] == "head" and not module.check_mode:
            node.mark_started(False)
    if want in ("start", "restart"):
        # Both always: a changed token must not hide a changed cert.
        token_changed, tls_changed = node.install_token(), node.install_tls()
        if (token_changed or tls_changed) and state["running"] and not module.check_mode:
            _, state = node.stop(state)  # Ray reads its token and certs at start only: restart it on the new ones
            if p["node_type"] == "head" and (token_changed or tls_changed == "all"):
                node.mark_started(False)  # a clean restart, not a heal: the old workers cannot reconnect
            elif p["node_type"] == "head":
                node.renewed = True  # a new leaf of the same CA: back on its store, the workers reconnect
        started, state = node.start(state)
        changed = changed or started or bool(token_changed or tls_changed)
    if query == "status" and (why := head_without_gcs(p["node_type"], state, p.get("fault_tolerance"))):
        node.fail(why)
    extra = {}
    if query == "logs":
        extra["log"] = tail(node.log_file, p["log_lines"])
    if query == "doctor":
        extra["doctor"] = node.doctor(state)
    if query == "wait":
        node.need_paths()
        extra["cluster"] = node.wait(state)
    elif p["cluster_view"] and state["running"]:
        node.need_paths()
        nodes, err = node.cluster_nodes(state)
        extra["cluster"] = cluster_summary(nodes) if nodes is not None else {"error": err}
    if node.notes:
        extra["note"] = "; ".join(node.notes)
    extra["supervisor"] = describe(p["supervisor"], node.supervisor_facts())
    record = read_json(p["deploy_record"]) if query in ("status", "doctor") and p["deploy_record"] else None
    module.exit_json(changed=changed, sage=node_report(p, state, record, **extra))


if __name__ == "__main__":
    main()
