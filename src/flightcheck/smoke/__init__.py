"""The ai-smoke machinery: the suite format, assertions, and the case runner."""
