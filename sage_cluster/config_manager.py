"""`python -m sage_cluster.config_manager`: what the guide's `python -m sage.cli.config_manager` did.

Writes the default config (~/.sage/config.yaml, or $SAGE_CONFIG) when no config is found, then shows it.
"""
from __future__ import annotations

import sys

from sage_cluster.cli import main

if __name__ == "__main__":
    from ansible_collections.sage.cluster.plugins.plugin_utils import config as cfgmod
    from sage_cluster.config_edit import write_atomic

    path = cfgmod.find(None).path or cfgmod.write_path(None)  # a config found anywhere is the one shown
    if not path.exists():
        write_atomic(path, cfgmod.template_text())
        print(f"Wrote the default config to {path}.", file=sys.stderr)
    sys.argv = ["sage", "config", "show"]
    main()
