"""The platform's CA and the parties' certificates (renkei keys tls-ca / tls-issue)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from renkei.app.cli import app
from renkei.kernel import tls
from renkei.kernel.settings import Settings, get_settings
from workers.plugin import tls_config


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


def test_a_revoked_certificate_is_listed_once_and_a_bad_list_is_located(tmp_path: Path) -> None:
    tls.make_ca(tmp_path)
    cert, _ = tls.issue(tmp_path, "jps")
    listed, serial = tls.revoke(tmp_path, cert)
    tls.revoke(tmp_path, cert)
    assert tls.read_revoked(listed) == {serial}
    assert listed.read_text().count("\n") == 1
    assert tls.serial_of(cert.read_bytes()) == serial
    bad = tmp_path / "bad.txt"
    bad.write_text("# lost laptop\nabc123\nnot-hex\n")
    with pytest.raises(tls.TlsError, match=r"bad.txt:3: not a serial number"):
        tls.read_revoked(bad)
    with pytest.raises(tls.TlsError, match="is not a certificate"):
        tls.revoke(tmp_path, bad)


def test_the_revoke_command_writes_the_list_and_refuses_what_is_no_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        assert runner.invoke(app, ["keys", "tls-ca"]).exit_code == 0
        assert runner.invoke(app, ["keys", "tls-issue", "jps"]).exit_code == 0
        done = runner.invoke(app, ["keys", "tls-revoke", str(tmp_path / "tls" / "jps.pem")])
        assert done.exit_code == 0, done.output
        assert len(tls.read_revoked(tmp_path / "tls" / tls.REVOKED)) == 1
        done = runner.invoke(app, ["keys", "tls-revoke", str(tmp_path / "tls" / "nothing.pem")])
        assert done.exit_code == 2 and "is not a certificate" in done.output
        assert "Traceback" not in done.output
    finally:
        get_settings.cache_clear()
