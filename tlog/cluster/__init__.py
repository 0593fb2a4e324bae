"""Many front ends on one PostgreSQL log (SPEC §8): one elected sequencer at a time, the others hand it
their writes.

- `lease`: leadership through PostgreSQL alone: a lease row with an epoch, renewed by a thread of its own,
  and the fence every batch's transaction runs before it writes.
- `handoff`: the intake table: a front end inserts a validated request, the sequencer claims it, answers
  it once its batch is committed, and wakes the front end with NOTIFY.
"""
