"""Webhook serving settings and certificates."""

from __future__ import annotations

import pathlib
import ssl

import pytest
from cryptography import x509

from dbmigrate_operator.gating import server, tls


def test_settings_from_env() -> None:
    settings = server.WebhookSettings.from_env(
        {
            "DBMIGRATE_WEBHOOK_LISTEN_HOST": "0.0.0.0",
            "DBMIGRATE_WEBHOOK_PORT": "8443",
            "DBMIGRATE_WEBHOOK_PUBLIC_HOST": "host.docker.internal",
            "DBMIGRATE_WEBHOOK_REGISTER": "true",
            "DBMIGRATE_WEBHOOK_FAILURE_POLICY": "Ignore",
            "DBMIGRATE_OPERATOR_NAMESPACE": "ops",
            "DBMIGRATE_GATE_SWEEP_SECONDS": "7.5",
        }
    )
    assert settings.url == "https://host.docker.internal:8443"
    assert settings.register
    assert settings.failure_policy == "Ignore"
    assert settings.operator_namespace == "ops"
    assert settings.sweep_seconds == 7.5


def test_defaults_match_the_chart_mount() -> None:
    settings = server.WebhookSettings.from_env({})
    assert settings.port == 9443
    assert settings.cert_file.endswith("/tls.crt")
    assert not settings.register
    assert settings.failure_policy == "Fail"
    assert settings.url == "https://127.0.0.1:9443"


def test_bad_failure_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="FAILURE_POLICY"):
        server.WebhookSettings.from_env({"DBMIGRATE_WEBHOOK_FAILURE_POLICY": "Allow"})


def test_self_signed_certificate_names_every_host() -> None:
    made = tls.self_signed(["127.0.0.1", "webhook.example.test"])
    cert = x509.load_pem_x509_certificate(made.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["webhook.example.test"]


def test_build_server_without_files_self_signs(tmp_path: pathlib.Path) -> None:
    settings = server.WebhookSettings(cert_file=str(tmp_path / "no.crt"), key_file=str(tmp_path / "no.key"))
    serving = server.build_server(settings)
    cert = x509.load_pem_x509_certificate(serving.ca_bundle)
    assert cert.subject.rfc4514_string() == "CN=127.0.0.1"
    context = ssl.create_default_context(cadata=serving.ca_bundle.decode())
    assert context.cert_store_stats()["x509_ca"] == 1


def test_build_server_prefers_a_mounted_ca(tmp_path: pathlib.Path) -> None:
    made = tls.self_signed(["svc.ns.svc"])
    (tmp_path / "tls.crt").write_bytes(made.cert_pem)
    (tmp_path / "tls.key").write_bytes(made.key_pem)
    (tmp_path / "ca.crt").write_bytes(b"CA BUNDLE")
    settings = server.WebhookSettings(cert_file=str(tmp_path / "tls.crt"), key_file=str(tmp_path / "tls.key"))
    assert server.build_server(settings).ca_bundle == b"CA BUNDLE"
