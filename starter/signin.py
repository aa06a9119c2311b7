"""Who is at the desk: sign-in by OpenID Connect (or, in --dev on loopback, "sign in as"),
the session cookie, and the CSRF token every state-changing form carries.

The signed-in person is the policy person whose email is the ID token's verified email;
anyone else is told so and can act on nothing. The session is a signed cookie (keyed by
$ESCALATION_SECRET): HttpOnly, SameSite=Lax, Secure when the desk's URL is https, with an
expiry checked here as well as by the cookie's signature.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import authlib.deprecate  # its import turns its notices on; one is quieted below
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from workflows.policy import Person, Policy
from workflows.rules import find_person

with warnings.catch_warnings():  # Authlib's notice that it would rather have httpx2
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

log = logging.getLogger("escalation_desk.signin")

ISSUER, CLIENT_ID, CLIENT_SECRET = (
    "ESCALATION_OIDC_ISSUER",
    "ESCALATION_OIDC_CLIENT_ID",
    "ESCALATION_OIDC_CLIENT_SECRET",
)
SESSION_SECONDS = 12 * 3600  # a working day and a bit; then sign in again
COOKIE = "desk_session"

Page = Callable[..., HTMLResponse]


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str

    @classmethod
    def from_env(cls) -> OidcConfig | None:
        """The provider, or None when none is configured; ValueError names what is missing
        when only some of the three variables are set."""
        values = {k: os.environ.get(k, "").strip() for k in (ISSUER, CLIENT_ID, CLIENT_SECRET)}
        if not any(values.values()):
            return None
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise ValueError(f"{', '.join(missing)}: needed with the other OpenID variables")
        return cls(values[ISSUER].rstrip("/"), values[CLIENT_ID], values[CLIENT_SECRET])


def missing_console_config() -> str:
    return (
        f"the desk console needs an OpenID provider: set {ISSUER}, {CLIENT_ID} and "
        f"{CLIENT_SECRET} (or run with --dev on a loopback address)"
    )


def console_unavailable(page: Page) -> HTMLResponse:
    text = missing_console_config()
    return page(
        "denied.html",
        503,
        title="The desk console is not configured",
        reason=text[0].upper() + text[1:] + ".",
        hint="Approval, rating and reopen links from messages keep working.",
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def person_by_email(policy: Policy, email: str) -> Person | None:
    wanted = email.strip().lower()
    for person in people(policy):
        if person.email.lower() == wanted:
            return person
    return None


def people(policy: Policy) -> list[Person]:
    return [*(p for d in policy.departments.values() for p in d.people), *policy.executives]


def csrf_token(request: Request) -> str:
    """This session's token for its forms (made on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def csrf_ok(request: Request, sent: str | None) -> bool:
    expected = request.session.get("csrf")
    return bool(expected and sent and secrets.compare_digest(str(expected), sent))


def safe_next(target: str | None) -> str:
    """Back to a page of this desk only (never another site)."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


class SignIn:
    """Mounts the sign-in routes and tells who a request is from."""

    def __init__(
        self,
        app: FastAPI,
        policy: Callable[[], Policy],
        page: Page,
        base_url: str,
        secret: str,
        oidc: OidcConfig | None,
        dev: bool,
        session_seconds: int = SESSION_SECONDS,
    ) -> None:
        self.policy, self.page, self.base_url = policy, page, base_url.rstrip("/")
        self.oidc, self.dev = oidc, dev and oidc is None
        self.session_seconds = session_seconds
        self.enabled = oidc is not None or self.dev
        app.add_middleware(
            SessionMiddleware,
            secret_key=hashlib.sha256(f"escalation-desk/session:{secret}".encode()).hexdigest(),
            session_cookie=COOKIE,
            max_age=session_seconds,
            same_site="lax",
            https_only=self.base_url.startswith("https://"),
        )
        self.oauth = OAuth()
        if oidc is not None:
            self.oauth.register(
                "desk",
                client_id=oidc.client_id,
                client_secret=oidc.client_secret,
                server_metadata_url=f"{oidc.issuer}/.well-known/openid-configuration",
                client_kwargs={"scope": "openid email profile"},
            )
        self._routes(app)

    # --- who is asking -----------------------------------------------------------------

    def person(self, request: Request) -> Person | None:
        """The signed-in person, or None (not signed in, expired, or no longer in the policy)."""
        session = request.session
        pid, until = session.get("person"), session.get("until", 0)
        if not pid:
            return None
        if time.time() > float(until):
            session.pop("person", None)
            return None
        return find_person(self.policy(), str(pid))

    def to_signin(self, request: Request) -> RedirectResponse:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(here, safe='/')}", status_code=303)

    def _start(self, request: Request, person: Person, email: str) -> None:
        request.session.clear()
        request.session.update(
            person=person.id,
            email=email,
            until=time.time() + self.session_seconds,
            csrf=secrets.token_urlsafe(24),
        )
        log.info("signed in: %s (%s)", person.id, email)

    def refused(self, email: str, why: str) -> HTMLResponse:
        return self.page(
            "denied.html",
            403,
            title="Not a person of the desk",
            reason=f"Signed in as {email}, {why}.",
            hint="You can act on nothing here. Sign in with the address the desk's policy "
            "lists for you, or ask the desk's administrator to add you.",
        )

    # --- routes ------------------------------------------------------------------------

    def _routes(self, app: FastAPI) -> None:
        @app.get("/signin", response_class=HTMLResponse)
        async def signin(request: Request, next: str = "/") -> Response:
            if not self.enabled:
                return console_unavailable(self.page)
            if self.oidc is not None:
                request.session["next"] = safe_next(next)
                client: Any = self.oauth.create_client("desk")
                metadata = await client.load_server_metadata()
                if "S256" in metadata.get("code_challenge_methods_supported", []):
                    client.client_kwargs["code_challenge_method"] = "S256"
                return await client.authorize_redirect(request, f"{self.base_url}/auth/callback")
            return self.page(
                "signin.html",
                title="Sign in (development)",
                people=people(self.policy()),
                next=safe_next(next),
                csrf=csrf_token(request),
            )

        @app.post("/signin/as", response_class=HTMLResponse)
        async def signin_as(
            request: Request, person: str = Form(...), csrf: str = Form(""), next: str = Form("/")
        ) -> Response:
            client = request.client.host if request.client else ""
            if not self.dev or not is_loopback(client):
                return self.page("denied.html", 404, title="Not found", reason="No such page.")
            if not csrf_ok(request, csrf):
                return forbidden_form(self.page)
            found = find_person(self.policy(), person)
            if found is None:
                return self.refused(person, "who is not a person of the desk's policy")
            self._start(request, found, found.email)
            return RedirectResponse(safe_next(next), status_code=303)

        @app.get("/auth/callback", response_class=HTMLResponse)
        async def callback(request: Request) -> Response:
            if self.oidc is None:
                return self.page("denied.html", 404, title="Not found", reason="No such page.")
            client: Any = self.oauth.create_client("desk")
            try:
                token = await client.authorize_access_token(request)
            except OAuthError as err:
                return self.page(
                    "denied.html",
                    403,
                    title="Sign-in failed",
                    reason=f"The provider said: {err.description or err.error}.",
                )
            claims = token.get("userinfo") or {}
            email = str(claims.get("email") or claims.get("sub") or "?")
            target = safe_next(request.session.pop("next", "/"))
            if claims.get("email_verified") is not True:
                request.session.clear()
                return self.refused(email, "whose email the provider has not verified")
            found = person_by_email(self.policy(), email)
            if found is None:
                request.session.clear()
                return self.refused(email, "who is not a person of the desk's policy")
            self._start(request, found, email)
            return RedirectResponse(target, status_code=303)

        @app.post("/signout")
        async def signout(request: Request, csrf: str = Form("")) -> Response:
            if not csrf_ok(request, csrf):
                return forbidden_form(self.page)
            request.session.clear()
            return RedirectResponse("/signin?next=/", status_code=303)


def forbidden_form(page: Page) -> HTMLResponse:
    return page(
        "denied.html",
        403,
        title="This form cannot be used",
        reason="The form's security token is missing or stale: reload the page and try again.",
    )
