"""One contract suite, run against every target on its enforcing fake (see test_target_contract.py)."""
