"""Throwaway real components for the quickstart, tests and benchmarks.

Each helper installs and starts a real server under a state directory and stops
it by PID; nothing here is used by the replicator service itself.
"""
