# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One HTTP request as the live checks and the compat-route probe make it: plain http.client from
the standard library (it runs on a bare host Python, without Ansible), no redirect followed (a
redirect is an answer too, and a check names the URL that answered)."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from dataclasses import dataclass

USER_AGENT = "matrix.syn2mas"


@dataclass
class Answer:
    status: int | None  # None: nothing answered
    body: bytes = b""  # at most the `limit` asked for
    location: str = ""  # where a redirect points
    error: str = ""  # why nothing answered


def request(method: str, url: str, timeout: float, validate_certs: bool = True, body: bytes | None = None,
            headers: dict | None = None, limit: int | None = None) -> Answer:
    """`method` on `url`; an Answer whatever happens (an unreachable host, a bad URL)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        return Answer(None, error=f"not an http(s) URL: {url}")
    try:
        if parsed.scheme == "https":
            context = ssl.create_default_context()
            if not validate_certs:  # the operator's choice, for a staging certificate
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
        try:
            path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
            conn.request(method, path, body, {"User-Agent": USER_AGENT, **(headers or {})})
            response = conn.getresponse()
            return Answer(response.status, response.read(limit), response.getheader("Location") or "")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Answer(None, error=str(exc) or type(exc).__name__)
