"""Independent Standard Webhooks verifier for the webhook plugin's tests.

Reads {"secret", "headers", "body"} as JSON on stdin and verifies with the
`standardwebhooks` package from PyPI, at the instant of the request's own
`webhook-timestamp` (the tests send at a fixed instant). Prints `ok`, or the
error and exits 1.
"""

import json
import sys
from datetime import datetime, timezone

import standardwebhooks.webhooks as sw

msg = json.load(sys.stdin)
headers = msg["headers"]
at = float(headers["webhook-timestamp"])


class At(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(at, tz or timezone.utc)


sw.datetime = At
try:
    sw.Webhook(msg["secret"]).verify(msg["body"], headers, json_parse=False)
except Exception as e:  # noqa: BLE001 - report whatever the library says
    print(f"{type(e).__name__}: {e}")
    sys.exit(1)
print("ok")
