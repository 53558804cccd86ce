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
    """One client for every base URL, answered by httpx.MockTransport."""

    def __init__(self):
        super().__init__(8)
        self.client = httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(200, json=ANSWER))
        )

    def get(self, base_url: str) -> httpx.AsyncClient:
        return self.client


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
        await clients.client.aclose()
        return results

    # In a thread of its own: the browser tests' Playwright may have left an event loop
    # running in this one (asyncio.run() refuses to start a second).
    with ThreadPoolExecutor(1) as thread:
        held, other = thread.submit(asyncio.run, scenario()).result(timeout=120)

    assert order == ["held: parsing", "other: parsed", "other: back on the loop", "held: parsed"]
    for result in (held, other):
        assert result.prepared is not None and result.prepared.thumbnail
        assert result.data == PNG
