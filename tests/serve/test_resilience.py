"""Faults and overload without a cluster: the ingress's repeat-on-replica-loss, backpressure
and write rate answers, 405's Allow header, and the client honouring Retry-After.

Replica deaths are raised as Ray's own exception types from a stand-in deployment call (a
real kill is in tests/serve/test_soak.py); HTTP goes through FastAPI's test client."""

from __future__ import annotations

import asyncio
import pickle

import pytest
from fastapi.testclient import TestClient

from serve.api import ApiSettings, create_api
from serve.auth import KeyCheck
from serve.errors import ApiError
from serve.ingress import Ingress
from serve.metrics import ServiceMetrics
from serve.rate import RateLimit
from serve.uploads import Limits

KEY = "k-resilience"


def test_the_write_rate_allows_a_burst_then_refills_per_key():
    limit = RateLimit(rate_per_min=60, burst=3)  # one write a second
    assert [limit.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a", now=100.0) == pytest.approx(1.0)  # the wait until the next token
    assert limit.take("b", now=100.0) == 0.0  # keys do not share a bucket
    assert limit.take("a", now=101.0) == 0.0 and limit.take("a", now=101.0) > 0
    assert all(RateLimit(0, 1).take("a", now=0.0) == 0.0 for _ in range(100))  # 0 = unlimited


class NoWork:
    async def delete_generator(self, generator):
        return {"deleted": 0, "counts": {"trained": 0, "enrolled": 0}}


def test_writes_past_the_rate_are_429_with_retry_after_and_405_names_the_allowed_methods():
    settings = ApiSettings(Limits(1000, 1000, 3), KeyCheck(KEY, False, "K"), "v1", write_rate=RateLimit(60, 2))
    client = TestClient(create_api(NoWork(), settings, ServiceMetrics()))
    answers = [client.delete("/v1/generators/x", headers={"X-API-Key": KEY}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "rate_limited" and int(answers[2].headers["retry-after"]) >= 1
    r = client.get("/v1/attribute")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == "method_not_allowed"


def test_api_error_headers_survive_pickling():
    err = pickle.loads(pickle.dumps(ApiError(503, "overloaded", "busy", headers={"Retry-After": "2"}, queue=9)))
    assert (err.status, err.code, err.headers, err.details) == (503, "overloaded", {"Retry-After": "2"}, {"queue": 9})


def ingress(deadline_s: float = 5.0) -> Ingress:
    """An ingress object with only what ``_call`` uses (no deployment handles)."""
    target = getattr(Ingress, "__wrapped__", Ingress)
    obj = object.__new__(target)
    obj.retry_deadline_s, obj.retry_after_s, obj.retried = deadline_s, 2.0, 0
    obj.standby, obj.owner_lost = None, False
    return obj


def failing(errors: list[BaseException], value: str = "answer"):
    """A deployment call that raises ``errors`` one per attempt, then answers."""

    async def attempt():
        if errors:
            raise errors.pop(0)
        return value

    return attempt


def test_a_call_lost_with_its_replica_is_sent_again_and_answers():
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    ing = ingress()
    make = failing([ActorDiedError(), ActorUnavailableError("restarting", None)])
    assert asyncio.run(ing._call(make, "attribution")) == "answer" and ing.retried == 2


def test_a_lasting_loss_is_503_with_retry_after():
    from ray.exceptions import ActorDiedError

    with pytest.raises(ApiError) as info:
        asyncio.run(ingress()._call(failing([ActorDiedError()]), "reading", repeat=False))
    assert (info.value.status, info.value.code, info.value.headers) == (
        503,
        "replica_unavailable",
        {"Retry-After": "2"},
    )
    with pytest.raises(ApiError) as info:
        asyncio.run(ingress(deadline_s=0.3)._call(failing([ActorDiedError()] * 1000), "attribution"))
    assert info.value.code == "replica_unavailable"


class Remote:
    """A deployment method stand-in: ``.remote(...)`` answers from a script of outcomes."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)

    def remote(self, *args):
        outcome = self.outcomes.pop(0)

        async def answer():
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return answer()


def test_a_deletion_lost_with_its_replica_is_repeated_and_a_repeat_finding_nothing_is_done():
    from types import SimpleNamespace

    from ray.exceptions import ActorDiedError

    ing = ingress()
    gone = ApiError(404, "unknown_generator", "no generator 'x' in the index")
    ing.writer = SimpleNamespace(delete_generator=Remote([ActorDiedError(), gone]))
    out = asyncio.run(ing.delete_generator("x"))
    assert out == {"deleted": 0, "counts": {"trained": 0, "enrolled": 0}, "unconfirmed": True}
    ing.writer = SimpleNamespace(delete_generator=Remote([gone]))  # nothing lost: a plain 404
    with pytest.raises(ApiError) as info:
        asyncio.run(ing.delete_generator("x"))
    assert info.value.status == 404


def test_a_lost_owner_sends_calls_to_the_standby_until_it_says_the_owner_is_back():
    from types import SimpleNamespace

    from ray.exceptions import ActorDiedError

    ing = ingress()
    idle = ApiError(503, "standby_idle", "the index owner holds the store")
    ing.index = ing.writer = SimpleNamespace(generators=Remote([ActorDiedError(), {"from": "owner"}]))
    ing.standby = SimpleNamespace(generators=Remote([{"from": "standby"}, {"from": "standby"}, idle]))
    assert asyncio.run(ing.generators()) == {"from": "standby"} and ing.owner_lost  # lost: to the standby at once
    assert asyncio.run(ing.generators()) == {"from": "standby"}  # later calls go straight there
    assert asyncio.run(ing.generators()) == {"from": "owner"} and not ing.owner_lost  # the owner is back


class Slow:
    """A deployment method stand-in whose answer takes ``delay_s`` (an owner that is slow or gone)."""

    def __init__(self, answer, delay_s: float):
        self.answer, self.delay_s, self.calls = answer, delay_s, 0

    def remote(self, *args):
        self.calls += 1

        async def answer():
            await asyncio.sleep(self.delay_s)
            return self.answer

        return answer()


def test_a_slow_owner_is_waited_for_when_the_standby_cannot_take_the_store_and_left_when_it_can():
    from types import SimpleNamespace

    ing = ingress()
    owner = Slow({"from": "owner"}, delay_s=0.6)  # past the hedge delay (0.3 s)
    ing.index = ing.writer = SimpleNamespace(generators=owner)
    standby_read = Remote([{"from": "standby"}])
    # The owner holds the store: the standby answers False (no error, nothing logged as failed)
    # and is never sent the read; the owner's answer comes back.
    ing.standby = SimpleNamespace(acquire=Remote([False]), generators=standby_read)
    assert asyncio.run(ing.generators()) == {"from": "owner"} and not ing.owner_lost
    assert standby_read.outcomes == [{"from": "standby"}]  # untouched
    # The owner's process is gone (its call waits in a queue): the standby takes the store,
    # answers, and later calls go to it.
    ing.standby = SimpleNamespace(acquire=Remote([True]), generators=standby_read)
    assert asyncio.run(ing.generators()) == {"from": "standby"} and ing.owner_lost


def test_a_full_queue_is_503_overloaded_at_once():
    from ray.serve.exceptions import BackPressureError

    ing = ingress()
    with pytest.raises(ApiError) as info:
        asyncio.run(ing._call(failing([BackPressureError(num_queued_requests=9, max_queued_requests=8)]), "embedding"))
    assert (info.value.status, info.value.code, info.value.headers["Retry-After"]) == (503, "overloaded", "2")
    assert ing.retried == 0


def test_the_client_waits_as_long_as_retry_after_says(monkeypatch):
    from synthray import client as client_module

    class Reply:
        def __init__(self, status, headers=None, body=None):
            self.status_code, self.headers, self._body = status, headers or {}, body or {}
            self.text = str(self._body)

        def json(self):
            return self._body

    replies = [
        Reply(503, {"Retry-After": "3"}, {"error": {"code": "overloaded", "message": "busy"}}),
        Reply(429, {"Retry-After": "1"}, {"error": {"code": "rate_limited", "message": "slow down"}}),
        Reply(200, body={"ok": True}),
    ]
    waits = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    c = client_module.SynthrayClient("http://127.0.0.1:9", retries=3, backoff_s=0.1)
    monkeypatch.setattr(c.session, "request", lambda *a, **k: replies.pop(0))
    assert c.generators() == {"ok": True}
    assert waits == [3.0, 1.0]  # the server's delays (each above the client's own backoff)


def test_the_gate_refuses_past_its_bound_and_everything_once_draining():
    from serve.admission import Gate

    gate = Gate(limit=2, retry_after_s=3.0)
    assert gate.refusal() is None
    gate.in_flight = 2
    full = gate.refusal()
    assert full is not None and (full.status, full.code) == (503, "overloaded") and full.headers["Retry-After"] == "3"
    gate.in_flight, gate.draining = 0, True
    stopping = gate.refusal()
    assert stopping is not None and (stopping.status, stopping.code) == (503, "shutting_down")
    assert Gate(limit=0).refusal() is None  # no bound
