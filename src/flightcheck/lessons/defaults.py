"""The lessons' named defaults, in one place (config.py and the lessons both read them).

Every one of them is a check's threshold, so none may switch a check off: the config rejects
zero, negative or inverted values instead of treating them as "no limit".
"""

from __future__ import annotations

# --- cost: budgets in USD, projections at a request rate -----------------------------------
COST_MAX_PER_REQUEST_USD = 0.05
COST_MAX_PER_HOUR_USD = 10.0
COST_MAX_PER_DAY_USD = 100.0
COST_REQUESTS_PER_HOUR = 1000.0  # ~0.28 requests/s: a small production service
# The service's and the provider's token counts may differ a little (the service may count
# retries apart); beyond this the disagreement is reported, and cost uses the higher count.
COST_TOKEN_DISAGREEMENT = 0.10

# --- quality: current smoke metrics against a saved baseline -------------------------------
QUALITY_WARN_WORSE = 0.20  # more than 20 % worse warns
QUALITY_FAIL_WORSE = 0.40  # more than 40 % worse fails
QUALITY_BASELINE = ".flightcheck/baseline.json"
# Below these a change is noise, not degradation: a 10 ms → 14 ms p95 is not "40 % slower".
QUALITY_LATENCY_FLOOR_MS = 500.0  # an LLM round trip takes longer; below, a shared CI runner's noise
QUALITY_COST_FLOOR_USD = 0.0001
QUALITY_TOKENS_FLOOR = 50.0

# --- resources: sizing from measured memory and startup ------------------------------------
RESOURCES_HEADROOM = 0.30  # recommended memory ≥ measured need × 1.3
RESOURCES_FAR_ABOVE = 4.0  # configured memory more than 4× the recommendation warns (cost)
RESOURCES_CONCURRENCY = 8  # concurrent smoke requests `flightcheck resources` drives
RESOURCES_RUNS = 1
RESOURCES_COLD_START_S = 10.0  # slower to ready than this: recommend min instances ≥ 1
RESOURCES_PROBE_SAFETY = 2.0  # startup probe window ≥ 2× the slowest measured time-to-ready
# The fixed formula deploy guides use, printed beside the measured answer.
FORMULA_GB_PER_MODEL = 1.5
FORMULA_BASE_GB = 1.0
FORMULA_GB_PER_REQUEST = 0.2
FORMULA_MIN_GB = 2.0

# --- monitoring: alert thresholds -----------------------------------------------------------
MONITORING_ERROR_RATE = 0.05
MONITORING_P95_LATENCY_MS = 5000.0  # the seed's response-time limit
MONITORING_WINDOW_S = 300
