"""A PEP 503 package index of a directory of wheels on 127.0.0.1: a lab's mirror, as far as the rig hosts' pip can
tell (inside a network namespace of their own they reach no other). For test_bare_hosts and the bench."""
from __future__ import annotations

import html
import http.server
import re
import threading
from pathlib import Path


def serve_index(wheels: Path, root: Path) -> http.server.ThreadingHTTPServer:
    """Serve the wheels from root (an empty directory of the caller's) until .shutdown(); .index_url says where."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "files").symlink_to(wheels)
    for wheel in sorted(wheels.glob("*.whl")):
        name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        page = root / "simple" / name
        page.mkdir(parents=True, exist_ok=True)
        with open(page / "index.html", "a") as fh:
            fh.write(f'<a href="/files/{html.escape(wheel.name)}">{html.escape(wheel.name)}</a>\n')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.index_url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
