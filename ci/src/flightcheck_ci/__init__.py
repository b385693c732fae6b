"""Preflight checks for AI (LLM-backed) web services, in Dagger.

lint → build → run-with-memory-limit → health-poll → ai-smoke: the same checks `flightcheck ci`
runs on a laptop, on the service in --source, with the service under a hard memory limit and a
deterministic fake model server (or the real provider when a key is given). `dagger call ci
export --path=flightcheck-report` writes the reports. Functions: main.py; docs/dagger.md.
"""
