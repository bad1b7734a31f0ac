"""Shell completion as docs/cli.md tells users to set it up: Click's `_SAGE_COMPLETE=<shell>_source sage` (and
`_SAGE_CLUSTER_COMPLETE=... sage-cluster`) prints a script that defines the completion function."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import user_env

# The console scripts' own start: the program's name (sys.argv[0]) names the variable Click reads.
AS_SCRIPT = "import sys; sys.argv[0] = sys.argv.pop(1); from sage_cluster.cli import main; main()"
NAMES = {"sage": ("_SAGE_COMPLETE", "_sage_completion"),
         "sage-cluster": ("_SAGE_CLUSTER_COMPLETE", "_sage_cluster_completion")}


def complete(name: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", AS_SCRIPT, f"/usr/local/bin/{name}"], capture_output=True,
                          text=True, env=user_env(home, **env), timeout=60, check=True)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("name", NAMES)
def test_the_bash_source_defines_the_completion_function_and_it_completes(name: str, tmp_path: Path) -> None:
    var, function = NAMES[name]
    source = complete(name, tmp_path, **{var: "bash_source"}).stdout
    defined = subprocess.run(["bash", "-c", f'eval "$1"; declare -F {function}; complete -p {name}', "_", source],
                             capture_output=True, text=True, timeout=60)
    assert defined.returncode == 0, defined.stderr
    assert defined.stdout.splitlines() == [function, f"complete -o nosort -F {function} {name}"]
    # What the function asks the program for when the user types `<name> clu<TAB>`:
    words = complete(name, tmp_path, **{var: "bash_complete", "COMP_WORDS": f"{name} clu", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["plain,cluster"]


@pytest.mark.parametrize("shell, defines", [("zsh", "compdef _sage_completion sage"),
                                            ("fish", "function _sage_completion;")])
def test_zsh_and_fish_sources_define_the_function(shell: str, defines: str, tmp_path: Path) -> None:
    assert defines in complete("sage", tmp_path, _SAGE_COMPLETE=f"{shell}_source").stdout
