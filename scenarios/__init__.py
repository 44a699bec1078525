"""Scenarios: YAML files that build a world (fleet, broker, database, consumer), drive it through a timeline
of faults and check expectations against independent accounting. `tds run SCENARIO.yaml` runs one.

Offers: `load_scenario` (schema), `run_scenario` (runner), the expectation checkers and report writers.
Harness only: `tds_core` never imports this package.
"""

from .schema import Scenario, load_scenario

__all__ = ["Scenario", "load_scenario"]
