"""The platform's CA and the parties' certificates (renkei keys tls-ca / tls-issue)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from renkei.app.cli import app
from renkei.kernel import keys, tls
from renkei.kernel.settings import Settings, get_settings
from workers.plugin import service_config, tls_config


def test_a_party_certificate_names_its_party_and_keys_are_private(tmp_path: Path) -> None:
    ca = tls.make_ca(tmp_path)
    cert, key = tls.issue(tmp_path, "city-minato")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.ca_paths(tmp_path)[1].stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    issuer = x509.load_pem_x509_certificate(ca.read_bytes())
    loaded.verify_directly_issued_by(issuer)
    usage = loaded.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert tls.party_of(cert.read_bytes()) == "city-minato"
    # the gateway's is a server certificate, naming no party
    server, _ = tls.issue(tmp_path, tls.GATEWAY, server_names=["localhost", "127.0.0.1"])
    assert tls.party_of(server.read_bytes()) is None
    assert tls.party_of(b"not a certificate") is None


def test_nothing_is_overwritten_and_a_missing_ca_is_said(tmp_path: Path) -> None:
    with pytest.raises(tls.TlsError, match="no usable CA"):
        tls.issue(tmp_path, "jps")
    tls.make_ca(tmp_path)
    with pytest.raises(tls.TlsError, match="never overwritten"):
        tls.make_ca(tmp_path)
    tls.issue(tmp_path, "jps")
    with pytest.raises(tls.TlsError, match="exists"):
        tls.issue(tmp_path, "jps")


def test_the_commands_make_the_ca_and_certificates_and_refuse_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        done = runner.invoke(app, ["keys", "tls-ca"])
        assert done.exit_code == 0, done.output
        assert (tmp_path / "tls" / "ca.pem").exists()
        done = runner.invoke(app, ["keys", "tls-issue", "city-shibuya"])
        assert done.exit_code == 0, done.output
        for args, said in (
            (["keys", "tls-ca"], "never overwritten"),
            (["keys", "tls-issue", "no-such-org"], "unknown party 'no-such-org'"),
            (["keys", "tls-issue", "gateway"], "needs --server-name"),
            (["keys", "tls-issue", "jps", "--server-name", "x"], "gateway's certificate only"),
            (["keys", "tls-issue", "city-shibuya"], "exists"),
        ):
            done = runner.invoke(app, args)
            assert done.exit_code == 2 and said in done.output, (args, done.output)
            assert "Traceback" not in done.output
    finally:
        get_settings.cache_clear()


def test_the_client_side_is_plain_without_settings_and_says_what_is_missing(
    tmp_path: Path,
) -> None:
    assert tls_config(Settings()) is False
    with pytest.raises(ValueError, match="RENKEI_TEMPORAL_TLS_CERT and RENKEI_TEMPORAL_TLS_KEY"):
        tls_config(Settings(temporal_tls_ca=tmp_path / "ca.pem"))
    with pytest.raises(ValueError, match="without RENKEI_TEMPORAL_TLS_CA"):
        tls_config(Settings(temporal_tls_cert=tmp_path / "x.pem"))
    with pytest.raises(ValueError, match="cannot be read"):
        tls_config(
            Settings(
                temporal_tls_ca=tmp_path / "ca.pem",
                temporal_tls_cert=tmp_path / "x.pem",
                temporal_tls_key=tmp_path / "x.key",
            )
        )


def test_the_gateway_without_its_files_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RENKEI_TEMPORAL_ADDRESS", "127.0.0.1:1")
    for name in ("RENKEI_TEMPORAL_TLS_CA", "RENKEI_GATEWAY_CERT", "RENKEI_GATEWAY_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["gateway"])
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 2, done.output
    assert "RENKEI_TEMPORAL_TLS_CA, RENKEI_GATEWAY_CERT, RENKEI_GATEWAY_KEY" in done.output


def test_the_gateway_without_the_hubs_public_keys_or_a_database_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway checks revocations against the hub's public key, read from the database: it
    does not start without either, and says which (no key file is made up on the way)."""
    tls.make_ca(tmp_path)
    cert, key = tls.issue(tmp_path, tls.GATEWAY, server_names=["localhost"])
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RENKEI_TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("RENKEI_TEMPORAL_TLS_CA", str(tls.ca_paths(tmp_path)[0]))
    monkeypatch.setenv("RENKEI_GATEWAY_CERT", str(cert))
    monkeypatch.setenv("RENKEI_GATEWAY_KEY", str(key))
    for name in ("RENKEI_KEYS_FILE", "RENKEI_GATEWAY_HUB_PUBLIC", "RENKEI_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    hub_public = tmp_path / "hub-public.json"
    try:
        for public, said in (
            (None, "set RENKEI_GATEWAY_HUB_PUBLIC"),
            ("not json", "is not the hub's public keys"),
            (keys.new_keys().public("hub").model_dump_json(), "set RENKEI_DATABASE_URL"),
        ):
            if public is not None:
                hub_public.write_text(public)
                monkeypatch.setenv("RENKEI_GATEWAY_HUB_PUBLIC", str(hub_public))
            get_settings.cache_clear()
            done = CliRunner().invoke(app, ["gateway"])
            assert done.exit_code == 2 and said in done.output, done.output
            assert "Traceback" not in done.output
        assert not (tmp_path / "keys.json").exists()
    finally:
        get_settings.cache_clear()


def test_the_revoke_command_refuses_what_is_no_partys_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`renkei keys tls-revoke` reads the certificate before it touches the registry: a file
    that is no certificate, or a certificate that names no party, or no reason, exit 2."""
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    folder = tmp_path / "tls"
    try:
        assert runner.invoke(app, ["keys", "tls-ca"]).exit_code == 0
        tls.issue(folder, tls.GATEWAY, server_names=["localhost"])
        (tmp_path / "junk.pem").write_text("not a certificate")
        for args, reason in (
            ([str(folder / "nothing.pem"), "--reason", "lost"], "cannot be read"),
            ([str(tmp_path / "junk.pem"), "--reason", "lost"], "is not a certificate"),
            ([str(folder / "gateway.pem"), "--reason", "lost"], "names no renkei party"),
            ([str(folder / "ca.pem"), "--reason", " "], "--reason must say why"),
        ):
            done = runner.invoke(app, ["keys", "tls-revoke", *args])
            assert done.exit_code == 2 and reason in done.output, done.output
            assert "Traceback" not in done.output
        assert not (tmp_path / "postgres").exists()  # refused before any database
    finally:
        get_settings.cache_clear()


def test_a_partys_connection_is_named_after_its_certificates_party(tmp_path: Path) -> None:
    """The SDK names a worker's sticky queue after the client's identity: with a party's
    certificate it begins ``<party>/``, the only sticky names the gateway lets that party claim;
    without TLS the SDK's own default stands."""
    tls.make_ca(tmp_path)
    cert, key = tls.issue(tmp_path, "jps")
    guarded = Settings(
        temporal_tls_ca=tls.ca_paths(tmp_path)[0], temporal_tls_cert=cert, temporal_tls_key=key
    )
    assert service_config(guarded, "localhost:1").identity.startswith("jps/")
    assert "/" not in service_config(Settings(), "localhost:1").identity
