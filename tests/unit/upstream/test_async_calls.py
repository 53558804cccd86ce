"""The caller's calls on its event loop (transport.agenerate): the answer is parsed (its
JSON, its image decoded, checked and thumbnailed) in the loop's executor, so one answer
being parsed never holds up the other calls in flight."""

import asyncio
import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from generator.resilience.catalogue import DEFAULT_MODELS
from generator.upstream import transport
from generator.upstream.base import GenerationCall
from generator.upstream.gemini import GeminiProvider
from tests.media import picture

FLASH = DEFAULT_MODELS["gemini-2.5-flash-image"]
PNG = picture("PNG")
ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "image/png",
                            "data": base64.b64encode(PNG).decode(),
                        }
                    }
                ]
            },
            "finishReason": "STOP",
        }
    ]
}


class MockClients(transport.AsyncClients):
    """Pools whose clients are answered by httpx.MockTransport: `answer` (sync or async)."""

    def __init__(self, max_connections=8, answer=lambda request: httpx.Response(200, json=ANSWER)):
        super().__init__(max_connections)
        self.answer = answer

    def new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.answer))


def in_a_thread(scenario):
    # In a thread of its own: the browser tests' Playwright may have left an event loop
    # running in this one (asyncio.run() refuses to start a second).
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, scenario).result(timeout=120)


def test_it_moves_other_calls_on_while_an_answer_is_parsed():
    release = threading.Event()
    order = []

    class HeldProvider(GeminiProvider):
        """Parses the call named "held" only once the test lets it go."""

        def parse_success(self, body, call, latency_ms):
            if call.prompt == "held":
                order.append("held: parsing")
                # Never set if the parse blocked the loop: the test fails instead of hanging.
                assert release.wait(30), "the other call never moved while this one parsed"
            result = super().parse_success(body, call, latency_ms)
            order.append(f"{call.prompt}: parsed")
            return result

    async def scenario():
        clients, provider = MockClients(), HeldProvider("http://mock.invalid", "AIza-test-key")
        held = asyncio.create_task(
            transport.agenerate(clients, provider, GenerationCall(model=FLASH, prompt="held"))
        )
        while "held: parsing" not in order:
            await asyncio.sleep(0.001)
        other = await transport.agenerate(
            clients, provider, GenerationCall(model=FLASH, prompt="other")
        )
        order.append("other: back on the loop")
        release.set()
        results = await held, other
        await clients.aclose()
        return results

    held, other = in_a_thread(scenario())

    assert order == ["held: parsing", "other: parsed", "other: back on the loop", "held: parsed"]
    for result in (held, other):
        assert result.prepared is not None and result.prepared.thumbnail
        assert result.data == PNG


def test_it_spreads_the_calls_in_flight_over_small_pools_and_frees_them_after():
    """Hundreds of calls in flight never sit in one connection pool (whose every request
    looks at all of its connections): pools of at most POOL_CONNECTIONS, each call in
    the least busy one, and a call that ended, well or not, leaves its pool."""
    provider = GeminiProvider("http://mock.invalid", "AIza-test-key")
    arrived, release = [], None

    async def answer(request):
        arrived.append(request)
        fails = len(arrived) % 10 == 0
        await release.wait()
        if fails:
            return httpx.Response(503, json={"error": {"code": 503, "status": "UNAVAILABLE"}})
        return httpx.Response(200, json=ANSWER)

    async def scenario():
        nonlocal release
        release = asyncio.Event()
        clients = MockClients(max_connections=100, answer=answer)
        calls = [
            asyncio.create_task(
                transport.agenerate(clients, provider, GenerationCall(model=FLASH, prompt=f"{n}"))
            )
            for n in range(90)
        ]
        while len(arrived) < 90:
            await asyncio.sleep(0.001)
        during = clients.in_flight("http://mock.invalid")
        release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        after = clients.in_flight("http://mock.invalid")
        await clients.aclose()
        return during, outcomes, after

    during, outcomes, after = in_a_thread(scenario())

    assert len(during) == 4  # 100 connections: 4 pools of 25
    assert clients_limit(100) == 25
    assert sum(during) == 90 and max(during) - min(during) <= 1
    assert sum(1 for o in outcomes if isinstance(o, transport.UpstreamError)) == 9
    assert after == [0, 0, 0, 0]


def clients_limit(max_connections: int) -> int:
    return transport.AsyncClients(max_connections).limits.max_connections
