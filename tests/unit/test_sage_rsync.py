"""The rsync command line (plugin_utils/rsync.py): rsync itself splits the -e string, so an odd key path or user must
survive it; and the ssh line comes from ansible-core's own ssh plugin through its private _build_command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import sage_cluster  # noqa: F401  (the collection sage.cluster on sys.path)
from ansible_collections.sage.cluster.plugins.plugin_utils import rsync as sage_rsync


def test_rsync_hands_ssh_exactly_the_arguments_ansible_built(tmp_path: Path) -> None:
    # A stand-in for ssh that records what it was given: this checks rsync's parsing, not a connection.
    record = tmp_path / "argv.json"
    fake_ssh = tmp_path / "fake ssh"
    fake_ssh.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\nsys.exit(1)\n")
    os.chmod(fake_ssh, 0o755)
    ssh_argv = [str(fake_ssh), "-o", 'IdentityFile="/keys/id ed25519"', "-o", "User=it's", "-o",
                "ControlPath=\"/home/me/.sage/cp/abc\"", "-o", "ProxyCommand=nc %h $(touch /tmp/pwned) 22"]
    src = tmp_path / "project dir"
    src.mkdir()
    argv = sage_rsync.rsync_argv(ssh_argv, "node-1", f"{src}/", "/srv/sage home", ["*.log", "data dir/"], True)
    subprocess.run(argv, capture_output=True, timeout=30, check=False)
    got = json.loads(record.read_text())
    assert got[:len(ssh_argv) - 1] == ssh_argv[1:]
    assert got[len(ssh_argv) - 1] == "node-1" and "rsync" in got[len(ssh_argv)]
    assert not Path("/tmp/pwned").exists()
    assert "--dry-run" in argv and "--exclude=data dir/" in argv and "--delete" not in " ".join(argv)


def test_an_ipv6_host_gets_brackets() -> None:
    assert sage_rsync.rsync_argv(["ssh"], "fd00::5", "/p/", "/d", [], False)[-1] == "[fd00::5]:/d"



def test_the_ssh_line_is_the_ssh_plugins_own_on_this_ansible_core(tmp_path: Path) -> None:
    """Fails loudly when an ansible-core upgrade changes or drops the ssh plugin's private _build_command."""
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import connection_loader

    conn = connection_loader.get("ssh", PlayContext())
    conn.set_options(var_options={"ansible_host": "node-1", "ansible_user": "it's", "ansible_port": 2222,
                                  "ansible_ssh_private_key_file": "/keys/id ed25519",
                                  "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes",
                                  "ansible_ssh_extra_args": "-o UserKnownHostsFile=/kh"})
    argv = sage_rsync.ssh_argv(conn)
    assert argv[0] == "ssh" and all(isinstance(a, str) for a in argv)
    pairs = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-o"}
    assert {"Port=2222", 'IdentityFile="/keys/id ed25519"', "User=\"it's\"", "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/kh"} <= pairs, argv
    assert any(p.startswith("ControlPath=") for p in pairs), argv  # rsync rides the connection's master
    assert "node-1" not in argv  # rsync adds the host itself (HOST:PATH)
