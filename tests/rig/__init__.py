"""The test rig: N realistic SSH hosts on this machine. See rig.py; `python -m tests.rig --help`."""
from .rig import (DEFAULT_ENV, DEFAULT_ROOT, Host, Rig, controller_ray_version, default_names, ensure_env,
                  ensure_wheels, installed_ray_version, requirements, rig_root, systemd_requirements,
                  why_not_available)

__all__ = ["DEFAULT_ENV", "DEFAULT_ROOT", "Host", "Rig", "controller_ray_version", "default_names", "ensure_env",
           "ensure_wheels", "installed_ray_version", "requirements", "rig_root", "systemd_requirements",
           "why_not_available"]
