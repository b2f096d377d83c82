from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner

from aivos.shared.natsconf import HubConfig, LeafConfig, nats_server_binary, render_hub, render_leaf
from aivos.shared.natsconf.cli import nats_config_cmd


def _check_with_server(path: Path) -> subprocess.CompletedProcess[str]:
    # `nats-server -t` parses the config and exits without serving.
    return subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(path)], capture_output=True, text=True
    )


def test_hub_config_has_durable_jetstream_and_no_advertise(tmp_path: Path) -> None:
    text = render_hub(HubConfig(store_dir=str(tmp_path / "js"), monitor_port=8222))
    assert "sync_interval: always" in text
    assert 'domain: "hub"' in text
    assert "no_advertise: true" in text
    conf = tmp_path / "hub.conf"
    conf.write_text(text)
    result = _check_with_server(conf)
    assert result.returncode == 0, result.stderr


def test_leaf_config_points_at_hub_and_optionally_has_jetstream(tmp_path: Path) -> None:
    plain = render_leaf(LeafConfig(site="b1", hub_leaf_url="nats-leaf://10.0.0.1:7422"))
    assert "nats-leaf://10.0.0.1:7422" in plain
    assert "jetstream" not in plain
    js = render_leaf(LeafConfig(site="b1", store_dir=str(tmp_path / "ljs")))
    assert 'domain: "b1"' in js
    assert "sync_interval: always" in js
    conf = tmp_path / "leaf.conf"
    conf.write_text(js)
    result = _check_with_server(conf)
    assert result.returncode == 0, result.stderr


def test_cli_writes_hub_and_one_leaf_per_site(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    result = CliRunner().invoke(
        nats_config_cmd,
        ["--out", str(out), "--site", "b1", "--site", "b2", "--hub-url", "nats-leaf://hub:7422"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.conf")) == [
        "hub.conf",
        "leaf-b1.conf",
        "leaf-b2.conf",
    ]
    assert "nats-leaf://hub:7422" in (out / "leaf-b2.conf").read_text()
    assert "port: 4224" in (out / "leaf-b2.conf").read_text()


def test_secured_hub_and_leaf_configs_are_valid(tmp_path: Path) -> None:
    from aivos.shared.natsconf.permissions import site_permissions
    from aivos.shared.natsconf.pki import init_pki
    from aivos.shared.natsconf.render import HubUser

    pki = init_pki(tmp_path / "d")
    perms = site_permissions("b1")
    hub = HubConfig(
        store_dir=str(tmp_path / "js"),
        tls=pki.hub_files,
        users=(HubUser("aivos-site-b1-1", perms.publish, perms.subscribe),),
    )
    text = render_hub(hub)
    assert text.count("verify_and_map: true") == 2  # clients and leaf links
    assert '"CN=aivos-site-b1-1"' in text and hub.url.startswith("tls://")
    creds = pki.issue_client("aivos-site-b1-1", tmp_path / "kit")
    leaf = render_leaf(LeafConfig(site="b1", hub_tls=creds, generation=1))
    assert creds.cert in leaf and "aivos-leaf-b1-g1" in leaf
    for name, body in (("hub.conf", text), ("leaf.conf", leaf)):
        (tmp_path / name).write_text(body)
        result = _check_with_server(tmp_path / name)
        assert result.returncode == 0, result.stderr


def test_site_permissions_never_grant_other_sites_or_admin() -> None:
    from aivos.shared.natsconf.permissions import site_permissions

    perms = site_permissions("b1")
    assert perms.publish is not None and perms.subscribe is not None
    granted = perms.publish + perms.subscribe
    assert ">" not in granted and "aivos.>" not in granted
    assert not [s for s in granted if ".b2" in s or "AIVOS_SYNC" in s or "DELETE" in s]
    assert not [s for s in perms.publish if s.startswith(("$KV.", "$O."))]  # no store writes
    assert "aivos.*.b1" in perms.publish and "_INBOX.site-b1.>" in perms.subscribe


def test_reissued_client_files_are_replaced_whole(tmp_path: Path) -> None:
    """A second `issue_client` into the same folder swaps in new files (new inodes): a
    reader that opened the old certificate reads it whole, never a half-written new one."""
    from aivos.shared.natsconf.pki import init_pki

    pki = init_pki(tmp_path / "d")
    first = pki.issue_client("aivos-site-b1-1", tmp_path / "kit")
    paths = [Path(first.cert), Path(first.key), Path(first.ca)]
    inodes = [p.stat().st_ino for p in paths]
    with open(first.cert, "rb") as reader:  # opened before the re-issue, read after it
        second = pki.issue_client("aivos-site-b1-1", tmp_path / "kit")
        assert reader.read() != Path(second.cert).read_bytes()
    assert all(p.stat().st_ino != i for p, i in zip(paths, inodes, strict=True))
    assert oct(Path(second.key).stat().st_mode & 0o777) == "0o600"
    assert oct(Path(second.cert).stat().st_mode & 0o777) == "0o644"
    assert not [p.name for p in (tmp_path / "kit").iterdir() if p.name.startswith(".")]
