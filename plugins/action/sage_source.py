"""sage_source: what a deploy would send, computed once on the controller (run it with run_once).

Returns revision (a content hash of the files rsync sends), packaging_revision (the same over pyproject.toml,
setup.py, setup.cfg, requirements.txt), packaged (whether the source is a pip-installable project) and problem
(why the source must not be deployed, e.g. it is the home directory holding ~/.ssh). With strict: true a
problem fails the task, so nothing is copied; status and doctor pass strict: false and only lose the revision.
"""
from __future__ import annotations


from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import CheckedAction
from ansible_collections.sage.cluster.plugins.module_utils import source

ARGS = {"src": dict(type="path", required=True), "exclude": dict(type="list", elements="str", default=[]),
        "key_path": dict(type="path", default=""), "strict": dict(type="bool", default=True)}


class ActionModule(CheckedAction):
    ARGS = ARGS

    def act(self, result, args, task_vars):
        why = source.problem(args["src"], args["key_path"] or None)
        result.update(changed=False, problem=why, revision="", packaging_revision="", packaged=False)
        if why:
            if args["strict"]:
                result.update(failed=True, msg=f"refusing to deploy {args['src']}: {why}. Set deploy.source "
                                               "(sage_deploy_source) to the project directory.")
            return result
        result.update(revision=source.revision(args["src"], args["exclude"]),
                      packaging_revision=source.revision(args["src"], args["exclude"], only=source.PACKAGING),
                      packaged=source.is_packaged(args["src"]))
        return result
