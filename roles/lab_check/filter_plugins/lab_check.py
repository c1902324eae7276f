"""Filters of the lab_check role."""

from __future__ import annotations

import copy
from typing import Any


def optional_options(options: dict[str, Any]) -> dict[str, Any]:
    """A role's argument spec options with `required` dropped at every level: the check
    validates the types and choices of what the inventory sets; a role's required inputs
    that a stage does not use (kernel_variants for sweep.yml alone) are not asked for."""
    out = copy.deepcopy(options or {})

    def strip(spec: dict[str, Any]) -> None:
        for option in spec.values():
            if isinstance(option, dict):
                option.pop("required", None)
                if isinstance(option.get("options"), dict):
                    strip(option["options"])

    strip(out)
    return out


def addresses(hosts: list[Any]) -> list[str]:
    """Where the hosts are (ansible_host:ansible_port, the inventory name without an
    address), sorted: what makes two inventories the same lab."""
    found = []
    for host in hosts:
        name = host.get("ansible_host") or host.get("inventory_hostname")
        found.append(f"{name}:{host.get('ansible_port') or 22}")
    return sorted(found)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "lab_check_optional_options": optional_options,
            "lab_check_addresses": addresses,
        }
