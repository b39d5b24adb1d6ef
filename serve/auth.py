"""API keys: writes (enroll, delete) always need one, reads when configured to.

The key is never part of the app's arguments (those show up in Serve's status and
dashboard): the ingress reads it at start-up from an environment variable (default
``SYNTHRAY_API_KEY``; on Kubernetes, from a Secret) or from a file (a mounted Secret).
A server with no key configured refuses every write: nobody can change the index
without a key, not even by accident of a missing setting.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from serve.errors import ApiError

#: Header names a client may send the key in (``Authorization: Bearer <key>`` works too).
KEY_HEADER = "X-API-Key"


def resolve_api_key(env_var: str, key_file: str | None = None) -> str | None:
    """The configured key: the file's content when ``key_file`` is set, else ``$env_var``.

    Args:
        env_var: name of the environment variable holding the key.
        key_file: path of a file holding the key (surrounding whitespace ignored).
    Returns:
        the key, or None when none is configured.
    Raises:
        ValueError: ``key_file`` is set but unreadable or empty.
    """
    if key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"api_key_file {key_file}: cannot be read ({exc})") from exc
        if not key:
            raise ValueError(f"api_key_file {key_file} is empty")
        return key
    return os.environ.get(env_var, "").strip() or None


class KeyCheck:
    """Checks a presented key against the configured one.

    Args:
        key: the configured key (None: writes are disabled).
        read_requires_key: reads need the key too.
        env_var: where the key was expected (named in error messages).
    Raises:
        ValueError: reads must be keyed but no key is configured (nobody could read).
    """

    def __init__(self, key: str | None, read_requires_key: bool, env_var: str) -> None:
        if read_requires_key and not key:
            raise ValueError(f"read_requires_key is set but no API key is configured (set ${env_var} or api_key_file)")
        self.key = key
        self.read_requires_key = read_requires_key
        self.env_var = env_var

    @property
    def writes_enabled(self) -> bool:
        return self.key is not None

    def check(self, presented: str | None, write: bool) -> None:
        """Raises ``ApiError`` unless the request may go on.

        Args:
            presented: the key the request carried (None when it carried none).
            write: the request changes the index.
        Raises:
            ApiError: 403 ``writes_disabled`` (no key configured), 401 ``missing_api_key``,
                403 ``invalid_api_key``.
        """
        if not write and not self.read_requires_key:
            return
        if self.key is None:
            raise ApiError(
                403,
                "writes_disabled",
                f"this server has no API key configured (${self.env_var}), so enrollment and deletion are disabled",
            )
        if not presented:
            raise ApiError(
                401,
                "missing_api_key",
                f"this endpoint needs an API key: send it as '{KEY_HEADER}: <key>' or 'Authorization: Bearer <key>'",
            )
        if not hmac.compare_digest(presented.encode(), self.key.encode()):
            raise ApiError(403, "invalid_api_key", "the API key is not valid")
