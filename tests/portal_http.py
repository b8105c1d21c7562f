"""A person using the portal of a live server over plain HTTP (login, forms with CSRF)."""

from __future__ import annotations

import re
from typing import Any

import httpx

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class PortalSession:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=True, timeout=30)

    def csrf(self, path: str) -> tuple[str, str]:
        page = self.http.get(path)
        match = CSRF.search(page.text)
        assert match, f"no CSRF token on {path}"
        return match.group(1), page.text

    def login(self, username: str, password: str) -> None:
        token, _ = self.csrf("/accounts/login/")
        response = self.http.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": password},
        )
        assert f"Hello, {username}" in response.text, "login failed"

    def post_form(self, page_path: str, action: str, data: dict[str, Any]) -> httpx.Response:
        token, _ = self.csrf(page_path)
        return self.http.post(action, data={"csrfmiddlewaretoken": token, **data})

    def close(self) -> None:
        self.http.close()
