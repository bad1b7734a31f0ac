"""What the collection's action plugins share (plugin_utils: the collection's home for controller code).

CheckedAction: an action done on the controller, its options checked first (sage_rsync, sage_source, ...).
ProbedAction: a module's controller side that first asks the node one fixed shell command and answers from it
when it can, else runs the module (sage_ray_node's status, sage_provision, sage_install): a node that needs
nothing so costs one SSH round trip, no Python start.
"""
from __future__ import annotations

import json

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash


class CheckedAction(ActionBase):
    """An action whose options are checked against ARGS (an argument spec, with RULES: required_if and the
    like) before anything else: a bad one fails the task with Ansible's own message, before any connection.
    ARGS None: no check here (the module checks them). A subclass writes act()."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    ARGS: dict | None = {}
    RULES: dict = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self.ARGS is None:
            args = self._task.args
        else:
            _, args = self.validate_argument_spec(argument_spec=self.ARGS, **self.RULES)
        return self.act(result, args, task_vars)

    def act(self, result, args, task_vars):
        """The action, with `result` to fill in and `args` checked; returns the result."""
        raise NotImplementedError


class ProbedAction(CheckedAction):
    """probe() first; when it gives no answer, the task's module runs with module_args()."""

    ARGS = None

    def act(self, result, args, task_vars):
        answer = self.probe(args)
        if answer is not None:
            result.update(answer)
            return result
        # The module's remote tmp dir (none with pipelining) goes in ActionBase.cleanup(), which the executor calls.
        return merge_hash(result, self._execute_module(module_args=self.module_args(args), task_vars=task_vars))

    def probe(self, args):
        """The task's result (changed, sage, ...) from the node without a module, or None: the module answers."""
        return None

    def module_args(self, args):
        """The module's arguments: the task's own, unless a subclass fills some in on the controller."""
        return self._task.args

    def shell(self, command, stdin=None):
        """The stdout of one fixed shell command on the node (values only ever on stdin), None when it fails."""
        out = self._low_level_execute_command(command, in_data=stdin)
        return out["stdout"] if out["rc"] == 0 else None

    def shell_json(self, command, stdin=None):
        """The JSON a shell command prints, None when it fails, prints nothing or no JSON."""
        out = self.shell(command, stdin)
        try:
            return json.loads(out) if out and out.strip() else None
        except ValueError:
            return None
