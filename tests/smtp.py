"""A real SMTP server on loopback for the notification tests (aiosmtpd in a thread)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def take(self) -> list[Message]:
        with self.lock:
            taken, self.messages = self.messages, []
        return taken


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtp_server() -> tuple[Inbox, Controller]:
    """Start a server on a free loopback port; the caller stops the controller."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    return inbox, controller
