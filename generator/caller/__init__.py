"""The upstream calls, made away from the RQ workers (docs/jobs.md, "The caller").

A worker's step decides to call a model and puts the call on a Redis list
(`calls.send`); a caller process (`manage.py caller`, `process.Caller`) takes it, makes
it on its event loop among hundreds of others, then records and acts on the answer
itself, in its thread pool (`generator.jobs.record`: the Attempt, the shared health,
the policy, the delivery or the hand-over). The request's row says who holds the step
at each moment (the worker, CALLS_HOLDER, the caller), with a lease: whoever dies, the
reconciler takes the request back.
"""
