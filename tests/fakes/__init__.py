"""Fake advertising platforms on pytest-httpserver, for the target tests and the contract suite."""
