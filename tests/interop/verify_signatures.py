"""A federation peer that checks Homing's request signatures with an
independent RFC 9421 implementation (PyPI's http-message-signatures), as a
receiver behind a proxy would: the target URI is rebuilt from the request
line and the Host header as received.

Usage: verify_signatures.py BIND_HOST BIND_PORT KEYID PUBLIC_KEY_B64URL
Prints the port it listens on, then answers every request: 200 when the
signature covers Homing's components and verifies with the given key, else
401 with the library's reason.
"""

import base64
import datetime
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

COVERED = ("@method", "@target-uri", "@authority", "content-digest")


def main():
    host, port, keyid, public = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    raw = base64.urlsafe_b64decode(public + "=" * (-len(public) % 4))
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={keyid: Ed25519PublicKey.from_public_bytes(raw)}, private_keys={}
        ),
    )

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            url = f"http://{self.headers['Host']}{self.path}"
            request = requests.Request(self.command, url, headers=dict(self.headers), data=body)
            try:
                verifier.verify(
                    request.prepare(),
                    require_components=COVERED,
                    body=body,
                    max_age=datetime.timedelta(minutes=5),
                )
                status, reply = 200, {"queued_for_you": False}
            except Exception as error:  # the reason goes back to the test
                status, reply = 401, {"error": "bad_signature", "message": f"{url}: {error}"}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PUT = answer

        def log_message(self, *args):
            pass

    server = HTTPServer((host, port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
