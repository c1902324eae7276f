"""Provisioning on the virtual lab: each guest's lab facts match its configured NUMA shape.

That provisioning again changes nothing is checked by test_site's second run of the whole
job (changed=0 on every host, provisioning included), not by a run of its own here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from miglab.lab.ansible import PlaybookRun

from .conftest import playbook, read_host_file, report

FACTS_PATH = "/var/lib/miglab/lab-facts.json"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def provisioned(vlab_up: PlaybookRun) -> PlaybookRun:
    run = playbook("playbooks/provision.yml")
    assert run.returncode == 0, report(run)
    return run


def test_lab_facts_match_each_topology(
    provisioned: PlaybookRun, guests: list[dict[str, Any]]
) -> None:
    for guest in guests:
        facts = json.loads(read_host_file(guest["name"], FACTS_PATH))
        assert facts["schema"] == "miglab.labfacts/1"
        assert facts["arch"] == "x86_64"
        assert facts["base_page_size"] == 4096
        assert facts["pmd_thp_size"] == 2 * MIB
        nodes = facts["numa_nodes"]
        assert len(nodes) == len(guest["numa"]), guest["name"]
        first_cpu = 0
        for node, wanted in zip(nodes, guest["numa"], strict=True):
            assert node["cpus"] == list(range(first_cpu, first_cpu + wanted["cpus"])), (
                guest["name"],
                node,
            )
            first_cpu += wanted["cpus"]
            # The node's present pages: its configured size, less any hole in it.
            configured = wanted["memory_mib"] * MIB
            assert 0.85 * configured <= node["memory_bytes"] <= configured, (guest["name"], node)
        assert facts["cpu_count"] == first_cpu

