"""Whether systemd-tmpfiles' age cleanup reaches a node's Ray dirs (module_utils/tmpfiles.py), as doctor warns."""
from __future__ import annotations

import subprocess

from ansible_collections.sage.cluster.plugins.module_utils import tmpfiles

# Debian 13's tmp.conf (upstream's, 10 days in /tmp), as `systemd-tmpfiles --cat-config` prints it.
DEBIAN13 = """# /usr/lib/tmpfiles.d/tmp.conf
#  This file is part of systemd.
# See tmpfiles.d(5) for details

# Clear tmp directories separately, to make them easier to override
D /tmp 1777 root root 10d
q /var/tmp 1777 root root 30d
"""
# Debian 12's: /tmp emptied at boot only, no age.
DEBIAN12 = "# /usr/lib/tmpfiles.d/tmp.conf\nD /tmp 1777 root root -\n#q /var/tmp 1777 root root 30d\n"


def cleaner(path, text):
    rule = tmpfiles.cleaner(path, tmpfiles.parse(text))
    return rule and (rule["path"], rule["age"], rule["file"])


def test_parse_reads_type_path_age_and_the_file_each_line_is_in():
    rules = tmpfiles.parse(DEBIAN13 + '# /etc/tmpfiles.d/sage-ray.conf\nx "/tmp/ray head"\nd! /run/x 0755 - - 1d\n')
    assert [(r["type"], r["path"], r["age"], r["boot_only"], r["file"]) for r in rules] == [
        ("D", "/tmp", "10d", False, "/usr/lib/tmpfiles.d/tmp.conf"),
        ("q", "/var/tmp", "30d", False, "/usr/lib/tmpfiles.d/tmp.conf"),
        ("x", "/tmp/ray head", "-", False, "/etc/tmpfiles.d/sage-ray.conf"),
        ("d", "/run/x", "1d", True, "/etc/tmpfiles.d/sage-ray.conf")]
    assert tmpfiles.parse('x "/tmp/unclosed\n\n# a comment\nbare\n') == []


def test_an_age_rule_above_the_dir_cleans_it_unless_an_x_line_keeps_it():
    assert cleaner("/tmp/ray_head", DEBIAN13) == ("/tmp", "10d", "/usr/lib/tmpfiles.d/tmp.conf")
    assert cleaner("/tmp/ray_head/", DEBIAN13) == ("/tmp", "10d", "/usr/lib/tmpfiles.d/tmp.conf")
    assert cleaner("/var/tmp/ray", DEBIAN13)[:2] == ("/var/tmp", "30d")
    assert cleaner("/tmp/ray_head", DEBIAN12) is None
    assert cleaner("/home/sage/ray", DEBIAN13) is None
    for exclusion in ("x /tmp/ray_head", "x /tmp/ray_*", "x /tmp/ray_head/", "x /tmp"):
        assert cleaner("/tmp/ray_head", DEBIAN13 + exclusion + "\n") is None, exclusion
    # A glob's * does not cross a /, and X excludes only the directory itself, not what Ray writes in it.
    assert cleaner("/tmp/sage/ray_head", DEBIAN13 + "x /tmp/*head\n") is not None
    assert cleaner("/tmp/ray_head", DEBIAN13 + "X /tmp/ray_head\n") is not None
    # An x line on a parent keeps everything under it; a line of the dir's own with no age keeps the cleanup of
    # its parents out of it; one with an age cleans it by that age.
    assert cleaner("/tmp/sage/ray_head", DEBIAN13 + "x /tmp/sage\n") is None
    assert cleaner("/tmp/ray_head", DEBIAN13 + "d /tmp/ray_head 0755 sage sage -\n") is None
    assert cleaner("/tmp/ray_head", DEBIAN13 + "d /tmp/ray_head 0755 sage sage 1w\n")[:2] == ("/tmp/ray_head", "1w")
    # Boot-only lines never run in the cleanup timer's --clean; of two lines for one path, the first applies.
    assert cleaner("/tmp/ray_head", "D! /tmp 1777 root root 10d\n") is None
    assert cleaner("/tmp/ray_head", "d /tmp 1777 root root -\n" + DEBIAN13) is None


def test_doctor_warns_with_the_fix_on_a_systemd_node_only():
    rules = tmpfiles.parse(DEBIAN13)
    row = tmpfiles.check("/tmp/ray_worker", rules, "systemd", "worker.temp_dir")
    assert row["ok"] and row["warn"], row
    assert "10d" in row["detail"] and "`D /tmp 1777 root root 10d`" in row["detail"], row
    assert row["fix"] == ("an admin adds the line `x /tmp/ray_worker` to /etc/tmpfiles.d/sage-ray.conf on the node, "
                          "or set worker.temp_dir in the config to a directory outside /tmp")
    plain = tmpfiles.check("/tmp/ray_worker", rules, "hostinit.py", "worker.temp_dir")
    assert plain["ok"] and not plain["warn"] and "PID 1 is not systemd" in plain["detail"]
    safe = tmpfiles.check("/home/sage/ray", rules, "systemd", "head.temp_dir")
    assert safe["ok"] and not safe["warn"]


def test_the_configuration_comes_from_cat_config_or_else_the_files_in_its_order(tmp_path, monkeypatch):
    assert "tmp.conf" in tmpfiles.config_text()  # this machine's systemd-tmpfiles, or its files
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "tmp.conf").write_text("D /tmp 1777 root root 10d\n")
    (lib / "a.conf").write_text("d /var/a - - - -\n")
    (etc / "tmp.conf").write_text("D /tmp 1777 root root -\n")  # an admin's override of the same name
    (etc / "sage-ray.conf").write_text("x /tmp/ray_head\n")
    monkeypatch.setattr(tmpfiles, "CONFIG_DIRS", (str(etc), str(tmp_path / "missing"), str(lib)))

    def no_cat_config(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "Unknown option --cat-config")

    text = tmpfiles.config_text(run=no_cat_config)
    assert [(r["file"], r["path"], r["age"]) for r in tmpfiles.parse(text)] == [
        (str(lib / "a.conf"), "/var/a", "-"), (str(etc / "sage-ray.conf"), "/tmp/ray_head", "-"),
        (str(etc / "tmp.conf"), "/tmp", "-")]
