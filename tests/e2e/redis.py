"""The drills' Redis store (head.fault_tolerance: redis): Debian's redis-server on this machine's loopback, which
the rig's hosts share, with a password and nothing saved to disk (test_gcs_ft, test_supervision_system)."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = "/usr/bin/redis-server"
PASSWORD = "drill-redis-secret-7c1f"


def server(data: Path, port: int) -> Iterator[str]:
    """A running Redis on 127.0.0.1:port (yields that address) until the generator is closed."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"no {REDIS_SERVER} (apt-get install redis-server)")
    proc = subprocess.Popen([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", PASSWORD,
                             "--dir", str(data), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(port), "--no-auth-warning", "-a", PASSWORD, "ping"],
                             capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not come up"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def password_file(home: Path) -> Path:
    """The password where a user keeps it for head.redis_password_file: a file of mode 0600."""
    path = home / "redis_password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path
