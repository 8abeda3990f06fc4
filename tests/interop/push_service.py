"""A Web Push service and user agent for Homing's push tests, built on
independent implementations: `py_vapid` verifies the VAPID JWT (RFC 8292)
and `http_ece` decrypts the aes128gcm body (RFC 8291).

Usage: push_service.py HOST PORT CERT_PEM KEY_PEM VAPID_PUBLIC_KEY

Prints one JSON line with the port and the subscription keys, then one
JSON line per request received. How it answers depends on the first path
segment: /ok/ 201; /gone/ 410; /slow/ 429 (Retry-After: 1) the first time,
then 201; /fail/ 500 the first time, then 201; /delay/ reports at once
and answers 201 a second later; /hang/ never answers. A
request that does not verify or decrypt is answered 400 and reported with
"ok": false.
"""

import base64
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import jwt as vapid_jwt

HOST, PORT, CERT, KEY, VAPID_KEY = sys.argv[1:6]

UA_PRIVATE = ec.generate_private_key(ec.SECP256R1())
UA_PUBLIC = UA_PRIVATE.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
)
AUTH = os.urandom(16)
SEEN = set()
LOCK = threading.Lock()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def report(record):
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def auth_params(header):
    """`vapid t=..., k=...` as RFC 7235 auth-params (spaces allowed)."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError("scheme is not vapid")
    params = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        params[name] = value
    return params


def verify(handler, body, origin):
    params = auth_params(handler.headers.get("Authorization", ""))
    if params.get("k") != VAPID_KEY:
        raise ValueError("k is not the server's VAPID key")
    token = params["t"]
    header = json.loads(unb64(token.split(".")[0]))
    if header.get("alg") != "ES256" or header.get("typ") != "JWT":
        raise ValueError("JWT header %r" % header)
    claims = vapid_jwt.decode(token, params["k"])
    now = time.time()
    if claims.get("aud") != origin:
        raise ValueError("aud %r is not %r" % (claims.get("aud"), origin))
    if not now < claims.get("exp", 0) <= now + 24 * 3600:
        raise ValueError("exp out of range")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise ValueError("sub %r" % claims.get("sub"))
    if handler.headers.get("Content-Encoding") != "aes128gcm":
        raise ValueError("Content-Encoding is not aes128gcm")
    plain = http_ece.decrypt(
        body, private_key=UA_PRIVATE, auth_secret=AUTH, version="aes128gcm"
    )
    return json.loads(plain)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        mode = self.path.strip("/").split("/")[0]
        # The origin the request was sent to, as its Host header names it.
        origin = "https://%s" % self.headers.get("Host", "")
        record = {
            "path": self.path,
            "ttl": self.headers.get("TTL"),
            "urgency": self.headers.get("Urgency"),
            "topic": self.headers.get("Topic"),
            "length": len(body),
            "at": time.time(),
        }
        try:
            record["payload"] = verify(self, body, origin)
            record["ok"] = True
        except Exception as error:  # reported, answered 400
            record["ok"] = False
            record["error"] = "%s: %s" % (type(error).__name__, error)
        if mode == "hang":
            report(record)
            time.sleep(3600)
            return
        if mode == "delay":
            record["status"] = 201
            report(record)
            time.sleep(1)
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first = self.path not in SEEN
        SEEN.add(self.path)
        status, headers = 201, {}
        if not record["ok"]:
            status = 400
        elif mode == "gone":
            status = 410
        elif mode == "slow" and first:
            status, headers = 429, {"Retry-After": "1"}
        elif mode == "fail" and first:
            status = 500
        record["status"] = status
        report(record)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer((HOST, int(PORT)), Handler)
server.daemon_threads = True
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
report({"port": server.server_address[1], "p256dh": b64(UA_PUBLIC), "auth": b64(AUTH)})
server.serve_forever()
