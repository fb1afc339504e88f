"""Dispatch use cases: claim a batch, send it under the rate limiter, record it; recover leases.

One module per step, imported by name (no re-exports): ``ports`` (what dispatch needs of Redis
and HTTP), ``plan`` (a campaign's send plan and the waits it shows), ``batch`` (claim one
batch, record its outcomes), ``send`` (a claimed batch through the gate to the platform),
``chain`` (batches back to back, pipelined), ``recovery`` (expired leases) and ``tick`` (the
beat's scheduled starts, due campaigns and completions). The pure rules and records live in
``campaigns.domain.dispatch``, the SQL in ``campaigns.storage.dispatch``.

Transactions are short and never span a network call:
claim (one statement, commit) -> sends (no transaction open) -> record (one statement).
"""
