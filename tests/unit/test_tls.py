"""sage as the cluster's CA (plugin_utils/tls.py): the files' modes, what a leaf covers, and what check() refuses."""
from __future__ import annotations

import datetime
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from ansible_collections.sage.cluster.plugins.module_utils import ray_node
from ansible_collections.sage.cluster.plugins.plugin_utils import tls


@pytest.fixture
def ca(tmp_path):
    return tls.ensure_ca(tmp_path / "tls")


def test_the_ca_is_made_once_its_key_only_the_owners(tmp_path, ca):
    d = tmp_path / "tls"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    again = tls.ensure_ca(d)
    assert again.cert_pem == ca.cert_pem


def test_a_missing_ca_that_may_not_be_made_is_one_line(tmp_path):
    with pytest.raises(tls.CAError, match=r"not on this machine.*Fix:"):
        tls.ensure_ca(tmp_path / "none", make=False)
    assert not (tmp_path / "none").exists()


def test_a_leaf_covers_the_node_and_this_host_and_is_signed_by_the_ca(ca):
    key, cert = ca.issue(["127.0.0.21", "w1"], "w1")
    assert "PRIVATE KEY" in key
    got = tls.facts(cert)
    assert set(got["sans"]) == {"127.0.0.21", "w1", "127.0.0.1", "localhost"}
    assert 88 <= got["days_left"] <= 90
    assert tls.check(cert, ca.cert_pem, ["127.0.0.21", "w1"]) is None


def test_check_names_what_is_wrong(tmp_path, ca):
    _, cert = ca.issue(["127.0.0.21"], "w1")
    assert "does not cover 127.0.0.22" in tls.check(cert, ca.cert_pem, ["127.0.0.22"])
    other = tls.ensure_ca(tmp_path / "other")
    assert "issued by another CA" in tls.check(cert, other.cert_pem, ["127.0.0.21"])
    assert "within 100 days" in tls.check(cert, ca.cert_pem, ["127.0.0.21"], renew_days=100)
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=100)
    _, expired = ca.issue(["127.0.0.21"], "w1", not_before=old)
    assert "expired on" in tls.check(expired, ca.cert_pem, ["127.0.0.21"])
    assert tls.check("garbage", ca.cert_pem, []) == "its certificate is not a PEM certificate"


def test_the_client_cert_is_made_once_and_serves_this_machine(tmp_path, ca):
    key, cert = ca.client()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_text()
    assert tls.check(first, ca.cert_pem, tls.local_names()) is None
    ca.client()
    assert cert.read_text() == first


def test_turning_tls_on_or_off_is_said_before_the_start_and_only_then(home):
    from ansible_collections.sage.cluster.plugins.plugin_utils.config import parse
    from sage_cluster import security

    path = home / "c.yaml"
    off, on = (parse(f"security:\n  tls: {mode}\n", path) for mode in ("off", "on"))
    assert security.tls_change(on) is None  # no start of this config from here yet: nothing known to change
    security.record_tls_mode(off)
    assert security.tls_change(off) is None
    line = security.tls_change(on)
    assert line and "security.tls is on now (off at this machine's last start)" in line and "restarts" in line
    assert stat.S_IMODE((home / ".sage" / "tls_modes.json").stat().st_mode) == 0o600
    # Another config's record is its own.
    security.record_tls_mode(parse("security:\n  tls: on\n", home / "other.yaml"))
    assert security.tls_change(on) is not None and security.tls_change(off) is None


def _files(where, ca, key, cert):
    where.mkdir()
    for name, text in (("ca.crt", ca.cert_pem), ("node.key", key), ("node.crt", cert)):
        (where / name).write_text(text)
    return ray_node.tls_paths(str(where))


@pytest.mark.parametrize("case", ["same CA", "server of another CA", "client of another CA", "name not covered"])
def test_a_refused_handshake_names_the_side_and_the_reason(tmp_path, ca, case):
    """tls_refusal against a real TLS server on loopback that asks for the client's certificate, as Ray's GCS."""
    other = tls.ensure_ca(tmp_path / "other")
    server = _files(tmp_path / "server", other if case == "server of another CA" else ca,
                    *(other if case == "server of another CA" else ca).issue(
                        ["127.0.0.9" if case == "name not covered" else "127.0.0.2"], "server"))
    client_ca = other if case == "client of another CA" else ca
    client = _files(tmp_path / "client", ca, *client_ca.issue(["127.0.0.1"], "client"))
    if case == "server of another CA":  # the client trusts its own CA only
        client = _files(tmp_path / "client2", ca, *ca.issue(["127.0.0.1"], "client"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server["cert"], server["key"])
    ctx.load_verify_locations(server["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.2", 0))  # every leaf covers 127.0.0.1

    def serve():
        conn, _ = listener.accept()
        with conn:
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(tls_conn.recv(24)[:1])
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    why = ray_node.tls_refusal("127.0.0.2", listener.getsockname()[1], client)
    thread.join(5)
    listener.close()
    expected = {"same CA": None, "server of another CA": "comes from another CA than this node's",
                "client of another CA": "refused this node's certificate", "name not covered": "does not cover"}[case]
    assert (why is None) if expected is None else (expected in why), why


def test_one_pem_file_with_the_cas_cert_and_key_serves_as_the_ca_and_is_never_made(tmp_path, ca):
    """AWX's sage TLS CA credential writes the CA as one file into a job; the role's ray_node_tls_ca_dir names it."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ca.cert_pem + (tmp_path / "tls" / "ca.key").read_text())
    same = tls.ensure_ca(bundle, make=False)
    assert same.cert_pem == ca.cert_pem
    _, cert = same.issue(["127.0.0.21"], "w1")
    assert tls.check(cert, ca.cert_pem, ["127.0.0.21"]) is None
    bundle.write_text(ca.cert_pem)  # the key left out
    with pytest.raises(tls.CAError, match=r"cannot read the cluster's CA in .*bundle.pem"):
        tls.ensure_ca(bundle)


def test_tls_env_on_a_new_machine_names_files_that_exist(sage, tmp_path):
    """Before any start: the client's cert and key, the CA's cert and the token file it names are there, private
    ones of mode 0600."""
    sage.config = tmp_path / "c.yaml"
    sage.config.write_text("security:\n  tls: on\n")
    code, variables = sage.json("cluster", "tls", "env")
    assert code == 0, variables
    for name in ("RAY_TLS_CA_CERT", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_AUTH_TOKEN_PATH"):
        assert Path(variables[name]).is_file(), (name, variables)
    for name in ("RAY_TLS_SERVER_KEY", "RAY_AUTH_TOKEN_PATH"):
        assert stat.S_IMODE(Path(variables[name]).stat().st_mode) == 0o600, name
    assert variables["RAY_AUTH_MODE"] == "token"
