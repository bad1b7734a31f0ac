"""Installs into one env take turns: nodes sharing the env over NFS (sage_deploy's install, sage_provision's)."""
from __future__ import annotations

import errno
import fcntl
import os
import time


class EnvLock:
    """flock on a file in the env, so nodes sharing the env (NFS) install one at a time; no lock when the env
    is not writable (the install then fails on its own, with pip's reason). A holder is an install bounded by
    its own timeout, and the lock dies with its process: wait for a few of them, then give up.

    timeout_key: the setting that bounds one install (named when the wait gives up); fail: more of fail_json's
    result then (the module's `sage` dict)."""

    TURNS = 4

    def __init__(self, module, prefix, timeout, timeout_key, **fail):
        self.module, self.timeout, self.timeout_key, self.fail, self.fd = module, timeout, timeout_key, fail, None
        self.path = os.path.join(prefix, ".sage-install.lock")

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        except OSError:
            return self
        deadline = time.monotonic() + self.TURNS * self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    self.module.fail_json(msg=f"waited {self.TURNS * self.timeout} s for other installs into the "
                                              f"same env to finish ({self.path}); try again, or raise "
                                              f"{self.timeout_key}", **self.fail)
                time.sleep(0.2)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
