"""The codec server: the Temporal Web UI and `temporal --codec-endpoint` show a case's
payloads in clear to people of the desk, and to no one else.

`POST /codec/decode` (and `/codec/encode`) take and return `{"payloads": [...]}` in
protobuf JSON, as the UI and the CLI send them. Who may decode: a console session (the UI's
"include credentials"), or a bearer token from the desk's OpenID issuer whose verified email
is a person of the policy; in --dev on a loopback address, anyone on this machine. Anyone
else gets 401 (no credentials) or 403 and no plaintext. A payload whose key was destroyed
(erased) comes back as it is, encrypted.

Encoding happens where the case is known (the SDK passes the workflow id); the UI's own
encode (e.g. a signal typed in the UI) has no case to bind to, so it is sent plain, which
the case accepts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from starlette.middleware.base import BaseHTTPMiddleware
from temporalio.api.common.v1 import Payloads

from activities.codec import decode_one
from activities.keys import KeyStore
from starter.signin import OidcConfig, SignIn, is_loopback, person_by_email

UI_ORIGIN = "ESCALATION_UI_ORIGIN"
DEFAULT_UI_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
TOKEN_CACHE_SECONDS = 60


def ui_origins() -> tuple[str, ...]:
    text = os.environ.get(UI_ORIGIN, "")
    given = tuple(o.strip().rstrip("/") for o in text.replace(",", " ").split() if o.strip())
    return given or DEFAULT_UI_ORIGINS


class _Cors(BaseHTTPMiddleware):
    """CORS for /codec only, with credentials, for the UI's origins."""

    def __init__(self, app: Any, origins: tuple[str, ...]) -> None:
        super().__init__(app)
        self.origins = origins

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith("/codec/"):
            return await call_next(request)
        origin = request.headers.get("origin", "")
        allowed = origin in self.origins
        if request.method == "OPTIONS":
            response: Response = Response(status_code=204 if allowed else 403)
        else:
            response = await call_next(request)
        if allowed:
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Allow-Methods": "POST, OPTIONS",
                    "Access-Control-Allow-Headers": "content-type, x-namespace, authorization",
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                }
            )
        return response


class CodecServer:
    def __init__(
        self,
        app: FastAPI,
        keys: KeyStore,
        signin: SignIn,
        oidc: OidcConfig | None,
        open_on_loopback: bool,
    ) -> None:
        self.keys, self.signin, self.oidc = keys, signin, oidc
        self.open = open_on_loopback
        self._tokens: dict[str, tuple[float, bool]] = {}
        app.add_middleware(_Cors, origins=ui_origins())
        self._routes(app)

    async def _token_ok(self, token: str) -> bool:
        """Ask the issuer who the token is (userinfo); cached for a minute."""
        cached = self._tokens.get(token)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        ok = False
        if self.oidc is not None:
            client: Any = self.signin.oauth.create_client("desk")
            metadata = await client.load_server_metadata()
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(
                    metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {token}"}
                )
            if answer.status_code == 200:
                info = answer.json()
                email = str(info.get("email") or "")
                policy = self.signin.policy()
                ok = (
                    info.get("email_verified") is True
                    and person_by_email(policy, email) is not None
                )
        if len(self._tokens) > 1000:
            self._tokens.clear()
        self._tokens[token] = (time.monotonic() + TOKEN_CACHE_SECONDS, ok)
        return ok

    async def allowed(self, request: Request) -> Response | None:
        """None when this request may see plaintext, else the refusal."""
        if self.open and is_loopback(request.client.host if request.client else ""):
            return None
        if self.signin.person(request) is not None:
            return None
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            if await self._token_ok(auth[7:].strip()):
                return None
            return JSONResponse({"error": "not a person of the desk"}, status_code=403)
        return JSONResponse(
            {"error": "sign in to the desk, or send a bearer token from its issuer"},
            status_code=401,
        )

    def _routes(self, app: FastAPI) -> None:
        @app.post("/codec/decode")
        async def decode(request: Request) -> Response:
            if refused := await self.allowed(request):
                return refused
            payloads = json_format.Parse(await request.body(), Payloads())
            out = Payloads(payloads=[await decode_one(self.keys, p) for p in payloads.payloads])
            return Response(json_format.MessageToJson(out), media_type="application/json")

        @app.post("/codec/encode")
        async def encode(request: Request) -> Response:
            if refused := await self.allowed(request):
                return refused
            payloads = json_format.Parse(await request.body(), Payloads())
            return Response(json_format.MessageToJson(payloads), media_type="application/json")
