"""The store's batch: several operations in one round trip, each answered as alone
(against the in-memory store, and real Redis: the integration tier runs these tests
again)."""

from generator.resilience.limiter import GET
from generator.resilience.stores import Script

COUNT = Script(
    "return redis.call('INCRBY', KEYS[1], ARGV[1])",
    lambda db, keys, args: (
        db.set(keys[0], db.get(keys[0], 0, 0) + int(args[0])) or db.get(keys[0], 0)
    ),
)


def test_it_answers_a_batch_as_each_operation_alone(store):
    store.set_until("cooldown", 12.5, 100.0, 0.0)
    store.push_capped("samples", "3", 2)
    answers = store.batch(
        [
            ("get_float", "cooldown", 0.0),
            ("get_float", "nothing", 0.0),
            ("push_capped", "samples", "4", 2),
            ("push_capped", "samples", "5", 2),
            ("newest", "samples", 5),
            ("run", COUNT, ["count"], [2]),
            ("run", COUNT, ["count"], [3]),
            ("run", GET, ["nothing"], ["0"]),
        ]
    )
    assert answers == [12.5, None, None, None, ["5", "4"], 2, 5, None]
    assert store.newest("samples", 5) == ["5", "4"]
