"""What the roles' controller-side action plugins share (plugin_utils: the collection's home for controller code)."""
from __future__ import annotations

from ansible.plugins.action import ActionBase


class CheckedAction(ActionBase):
    """An action done on the controller (it sends no module file), in check mode too, whose options are checked
    against ARGS (an argument spec) before anything else: a bad one fails the task with Ansible's own message.
    A subclass sets ARGS and writes act()."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    ARGS: dict = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=self.ARGS)
        return self.act(result, args, task_vars)

    def act(self, result, args, task_vars):
        """The action, with `result` to fill in and `args` checked; returns the result."""
        raise NotImplementedError
