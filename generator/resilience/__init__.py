"""The resilience core: what to call, when, and what the upstream's answers mean.

Pure modules (no Django, no httpx): clock, taxonomy, catalogue, policy. Shared state
behind a store (Redis in production, memory in tests and the simulator): breaker,
limiter, health. `chain` runs the admit loop that the worker and the simulator share;
`from_settings` is the only module here that reads Django settings.
"""
