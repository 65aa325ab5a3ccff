"""The service around the receiver: configuration, wiring, command line."""
