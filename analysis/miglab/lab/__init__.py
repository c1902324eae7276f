"""Running the lab: `miglab run` over ansible-runner (run.py), the run's state from its
Ansible events (progress.py) and what a person watching sees (view.py)."""
