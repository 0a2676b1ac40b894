"""TLS to RabbitMQ: an `amqps://` URL's TLS options, in the names `rediss://` URLs use, as py-amqp takes them.

kombu hands a URL's `ssl_*` query options to py-amqp under their URL names, which py-amqp refuses
(`_wrap_socket_sni() got an unexpected keyword argument 'ssl_ca_certs'`, kombu 5.7.0 / amqp 5.3): an
`amqps://` URL written as a `rediss://` one is taken by kombu and fails at connect. vetro takes the
options out of the URL and gives them to Celery as `broker_use_ssl`, under py-amqp's names:

    amqps://user:pw@rabbit:5671/vhost?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/etc/c.pem&ssl_keyfile=/etc/c.key

The server's certificate is always checked, and its name against the URL's host, unless
`ssl_cert_reqs=none` says otherwise; without `ssl_ca_certs`, against the system's authorities.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The URL's names (those of a rediss:// URL) -> py-amqp's.
FILE_OPTIONS = {"ssl_ca_certs": "ca_certs", "ssl_certfile": "certfile", "ssl_keyfile": "keyfile"}
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def amqp_tls(url: str) -> tuple[str, dict[str, Any] | None]:
    """The URL without its TLS options, and those options for py-amqp (None: not `amqps://`).

    Raises ValueError, in one line, for an option that names nothing, a file that is not there, or TLS
    options on a plain `amqp://` URL.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {name: value for name, value in query if name.startswith("ssl_")}
    if parts.scheme != "amqps":
        if given:
            raise ValueError(f"{', '.join(given)}: TLS options on a plain {parts.scheme}:// URL (use amqps://)")
        return url, None
    unknown = sorted(set(given) - {*FILE_OPTIONS, "ssl_cert_reqs"})
    if unknown:
        known = ", ".join([*FILE_OPTIONS, "ssl_cert_reqs"])
        raise ValueError(f"{', '.join(unknown)}: not a TLS option of amqps:// URLs ({known})")
    options: dict[str, Any] = {}
    for name, option in FILE_OPTIONS.items():
        if name in given:
            if not Path(given[name]).is_file():
                raise ValueError(f"{name}: {given[name]!r} is not a file")
            options[option] = given[name]
    if ("certfile" in options) != ("keyfile" in options):
        raise ValueError("ssl_certfile and ssl_keyfile: give both (a client certificate and its key) or neither")
    reqs = given.get("ssl_cert_reqs", "required").lower()
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs: {given['ssl_cert_reqs']!r} is not one of {', '.join(CERT_REQS)}")
    options["cert_reqs"] = CERT_REQS[reqs]
    if reqs == "required":
        options["server_hostname"] = None  # kombu fills in the URL's host: py-amqp then checks the name
    rest = urlencode([(name, value) for name, value in query if not name.startswith("ssl_")])
    return urlunsplit(parts._replace(query=rest)), options
