"""A real SMTP server (aiosmtpd, Debian's python3-aiosmtpd) for the email
plugin's tests, on 127.0.0.1 only.

    smtp_server.py --port N --out DIR [--starttls CERT KEY] [--smtps CERT KEY]
                   [--auth USER:PASSWORD] [--no-smtputf8]

Each accepted message is written to DIR as NNN.eml (the raw bytes) and
NNN.json (envelope and whether the session was TLS and authenticated).
Prints `ready` once listening; stops on SIGTERM or when stdin closes.
"""

import argparse
import json
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--out", required=True)
p.add_argument("--starttls", nargs=2)
p.add_argument("--smtps", nargs=2)
p.add_argument("--auth")
p.add_argument("--no-smtputf8", action="store_true", help="do not offer SMTPUTF8 (offered by default)")
a = p.parse_args()


class Save:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        base = os.path.join(a.out, f"{n:03}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
            "peer": list(session.peer)[:2],
        }
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        return "250 2.0.0 Ok: queued as relance-test"


def context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


kwargs = {}
if a.auth:
    user, password = a.auth.split(":", 1)

    def check(server, session, envelope, mechanism, data):
        ok = data.login.decode() == user and data.password.decode() == password
        return AuthResult(success=ok, handled=False)

    kwargs.update(authenticator=check, auth_required=True, auth_require_tls=bool(a.starttls))
if a.starttls:
    kwargs.update(tls_context=context(*a.starttls), require_starttls=True)
if a.smtps:
    kwargs.update(ssl_context=context(*a.smtps))
# aiosmtpd's Controller offers SMTPUTF8 unless told not to.
kwargs.update(enable_SMTPUTF8=not a.no_smtputf8)

controller = Controller(Save(), hostname="127.0.0.1", port=a.port, server_hostname="localhost", **kwargs)
controller.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    controller.stop()
