"""Django's ASGI handler for HTTP, with one thread hop per request instead of a dozen, on a
thread kept from one request to the next.

Every view of the service is synchronous (DRF, templates, the ORM), and so is most of the
middleware. Django's own ASGI handler builds the middleware chain in async mode anyway: each
``MiddlewareMixin`` middleware then runs its ``process_request`` and ``process_response`` through
``sync_to_async``, and a sync-only one (WhiteNoise, the person's language) adds the way back,
``async_to_sync``, for everything inside it — about fifteen hops between the event loop and a
worker thread for one request. Each request also got a thread of its own (a fresh
``ThreadSensitiveContext``: a new one-thread executor, started for the request and joined by
yet another new thread after it). A pod's weights download paid all that each round.

Here the chain is built in sync mode, as under WSGI, and the whole of it — middleware and
view — runs in one ``sync_to_async`` call; the request's thread comes from a small pool of
one-thread executors that outlive requests. Each request still has one thread to itself for
all its synchronous work (what Django's thread-sensitive mode guarantees: a transaction, the
database connection and thread-locals stay on one thread); requests at the same moment get
different threads, as before. Async middleware or views still work (the sync chain calls them
through ``async_to_sync``), only without the saving.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

# Idle request threads kept for the next requests; more at once are made and then let go.
KEPT_THREADS = 16


class RequestThreads:
    """One-thread executors for requests: taken by a request, given back after it."""

    def __init__(self, kept: int = KEPT_THREADS) -> None:
        self.kept = kept
        self.idle: list[ThreadPoolExecutor] = []
        self.lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-request")

    def give(self, executor: ThreadPoolExecutor) -> None:
        with self.lock:
            if len(self.idle) < self.kept:
                self.idle.append(executor)
                return
        executor.shutdown(wait=False)  # its idle thread ends on its own


class SyncChainASGIHandler(ASGIHandler):
    """Django's ASGI handler, running the (sync) middleware chain and view in one hop."""

    def __init__(self) -> None:
        self.threads = RequestThreads()
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # Every task of the request has ended (handle awaits them): the thread is idle.
            self.threads.give(executor)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await sync_to_async(self.get_response, thread_sensitive=True)(
            request
        )
        return response
