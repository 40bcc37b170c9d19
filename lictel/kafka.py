"""One Kafka client configuration for every client lictel makes.

Producers (``producers.base``), the sink's consumer and producer, the pipeline's progress readers,
the topic administration (``lictel.broker``), the stream workers' catch-up reader and the Faust app
all take their connection settings from here, so a secured cluster (TLS, SASL PLAIN / SCRAM /
OAUTHBEARER) is configured once, by the ``LICTEL_KAFKA_*`` settings (docs/deploy.md).

Nothing here talks to a broker: it turns :class:`~lictel.config.Settings` into keyword arguments of
aiokafka's clients and Faust's app, and checks that the files they name can be read, so a mistake
is reported at start with the setting that names it rather than as a failed handshake later.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from lictel.config import Settings
from lictel.errors import ConfigError

# Faust's own topics beside lictel's (docs/deploy.md, "Topics"): the engine state's changelog and
# the partition assignor's leader topic, both named after the app id ``<prefix>-streams``.
FAUST_TOPICS = ("{app}-__assignor-__leader",)


class KafkaConfigError(ConfigError):
    """A ``LICTEL_KAFKA_*`` setting that cannot work."""


def faust_app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}-streams"


def all_topics(settings: Settings) -> list[str]:
    """Every topic lictel uses on a cluster: its own and those of the Faust app."""
    from lictel.broker import TOPICS

    app = faust_app_id(settings)
    return [settings.topic(t) for t in TOPICS] + [t.format(app=app) for t in FAUST_TOPICS]


def _readable(name: str, path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise KafkaConfigError(f"LICTEL_{name.upper()}={path}: cannot read it ({exc.strerror}); "
                               "give a readable PEM file or unset it") from None
    return str(path)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols (None otherwise): the system's trusted
    certificates plus ``kafka_ssl_cafile``, and a client certificate for mutual TLS."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = _readable("kafka_ssl_cafile", settings.kafka_ssl_cafile)
    certfile = _readable("kafka_ssl_certfile", settings.kafka_ssl_certfile)
    keyfile = _readable("kafka_ssl_keyfile", settings.kafka_ssl_keyfile)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    if certfile:
        password = settings.kafka_ssl_key_password.get_secret_value() or None
        try:
            ctx.load_cert_chain(certfile, keyfile, password)
        except (ssl.SSLError, OSError) as exc:
            raise KafkaConfigError(f"LICTEL_KAFKA_SSL_CERTFILE={certfile} (key: {keyfile or 'in the same file'}): "
                                   f"not a certificate and key that belong together ({exc})") from None
    return ctx


class OAuthToken(AbstractTokenProvider):
    """SASL/OAUTHBEARER tokens: read from ``kafka_oauth_token_file`` at every (re)authentication (a
    token that a sidecar or the platform renews), or fetched from ``kafka_oauth_token_url`` with
    the OAuth 2 client-credentials grant and kept until shortly before it expires."""

    def __init__(self, settings: Settings) -> None:
        self.file = settings.kafka_oauth_token_file
        self.url = settings.kafka_oauth_token_url
        self.client_id = settings.kafka_oauth_client_id or ""
        self.secret = settings.kafka_oauth_client_secret.get_secret_value()
        self.scope = settings.kafka_oauth_scope
        self._token: str | None = None
        self._until = 0.0

    async def token(self) -> str:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.fetch)

    def fetch(self) -> str:
        if self.file is not None:
            try:
                return self.file.read_text().strip()
            except OSError as exc:
                raise KafkaConfigError(f"LICTEL_KAFKA_OAUTH_TOKEN_FILE={self.file}: {exc.strerror}") from None
        if self._token is not None and time.monotonic() < self._until:
            return self._token
        assert self.url is not None
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.secret}
        if self.scope:
            form["scope"] = self.scope
        req = urllib.request.Request(self.url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = json.load(resp)
            token = str(answer["access_token"])
        except (OSError, ValueError, KeyError) as exc:
            raise KafkaConfigError(f"no OAuth token from LICTEL_KAFKA_OAUTH_TOKEN_URL={self.url}: {exc}") from None
        self._token, self._until = token, time.monotonic() + max(float(answer.get("expires_in", 300)) - 30, 0)
        return token


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every aiokafka client (producer, consumer, admin): client id,
    security protocol, TLS context and SASL credentials."""
    opts: dict[str, Any] = {"client_id": settings.kafka_client_id,
                            "security_protocol": settings.kafka_security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    mech = settings.kafka_sasl_mechanism
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert mech is not None  # Settings checks it
        opts["sasl_mechanism"] = mech
        if mech == "OAUTHBEARER":
            opts["sasl_oauth_token_provider"] = OAuthToken(settings)
        else:
            opts["sasl_plain_username"] = settings.kafka_sasl_username
            opts["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return opts


def compression(settings: Settings) -> str | None:
    """The producers' compression: the setting, else lz4 on a Kafka cluster (records of many
    similar events compress several-fold) and none on the embedded broker (loopback)."""
    name = settings.kafka_compression or ("lz4" if settings.kafka_bootstrap else "none")
    return None if name == "none" else name


def producer_options(settings: Settings) -> dict[str, Any]:
    """:func:`client_options` plus the producers' compression."""
    return client_options(settings) | {"compression_type": compression(settings)}


def faust_options(settings: Settings) -> dict[str, Any]:
    """The Faust app's settings for the same connection, the topics it creates and compression."""
    import faust

    opts: dict[str, Any] = {"broker_client_id": settings.kafka_client_id,
                            "topic_replication_factor": settings.kafka_replication_factor,
                            "topic_allow_declare": settings.kafka_create_topics,
                            "producer_compression_type": compression(settings)}
    aio = client_options(settings)
    ctx = aio.get("ssl_context")
    if "sasl_oauth_token_provider" in aio:
        opts["broker_credentials"] = faust.OAuthCredentials(oauth_cb=aio["sasl_oauth_token_provider"],
                                                            ssl_context=ctx)
    elif "sasl_mechanism" in aio:
        opts["broker_credentials"] = faust.SASLCredentials(username=aio["sasl_plain_username"],
                                                           password=aio["sasl_plain_password"],
                                                           mechanism=aio["sasl_mechanism"], ssl_context=ctx)
    elif ctx is not None:
        opts["broker_credentials"] = faust.SSLCredentials(ctx)
    return opts


def topic_configs(settings: Settings) -> dict[str, str]:
    """``kafka_topic_config`` (``key=value,key=value``) as a dict, for the topics lictel creates."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in settings.kafka_topic_config.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise KafkaConfigError(f"LICTEL_KAFKA_TOPIC_CONFIG: {item!r} is not key=value "
                                   "(e.g. min.insync.replicas=2,retention.ms=-1)")
        out[key.strip()] = value.strip()
    return out
