"""One contract suite, run against every target on the sandbox, its enforcing fake (see test_target_contract.py)."""
