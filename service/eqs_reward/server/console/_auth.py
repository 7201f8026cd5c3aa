"""Signing in to the console: the admin token once, then a signed session cookie.

The cookie's key is derived from the admin token, so every replica with the same token accepts
it and changing the token ends every session. It is HttpOnly and SameSite=Strict, and each form
carries a token derived from the session (CSRF): a form posted from another site has neither.
Refusals are the contract's errors (401 without or with an expired session, 403 for a wrong
token or a form that did not come from the console).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from eqs_reward.server._http import check_admin_token
from eqs_reward.server.errors import ForbiddenError, UnauthorizedError
from eqs_reward.server.settings import Settings

__all__ = ["COOKIE", "ConsoleAuth"]

COOKIE = "eqs_console"


class ConsoleAuth:
    """See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        token = (settings.admin_token or "").encode()
        self._key = hashlib.sha256(b"eqs-reward console\0" + token).digest()
        self._sessions = URLSafeTimedSerializer(self._key.hex(), salt="console-session")
        self.max_age = int(settings.console_session_s)

    def sign_in(self, token: str) -> str:
        """The session cookie's value for the right admin token; else the token's refusal."""
        check_admin_token(self.settings, f"Bearer {token}")
        return self._sessions.dumps(secrets.token_hex(16))

    def session(self, cookie: str | None) -> str:
        """The session id of a valid, unexpired cookie."""
        if not cookie:
            raise UnauthorizedError("sign in to the console first: /console/login")
        try:
            sid: str = self._sessions.loads(cookie, max_age=self.max_age)
        except SignatureExpired as exc:
            raise UnauthorizedError("the console session expired: sign in again") from exc
        except BadSignature as exc:
            raise UnauthorizedError("not a console session: sign in at /console/login") from exc
        return sid

    def csrf(self, sid: str) -> str:
        """The token every form of this session carries."""
        return hmac.new(self._key, b"csrf\0" + sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, sid: str, given: str | None) -> None:
        if not given or not hmac.compare_digest(given, self.csrf(sid)):
            raise ForbiddenError("this form did not come from the console (CSRF check failed)")
