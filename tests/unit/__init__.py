"""Fast unit tests: no SSH, no Ray, no playbook runs."""
