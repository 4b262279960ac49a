"""Pure parts of the NATS cluster layout: node config text, subject mapping, permissions."""

from __future__ import annotations

from pathlib import Path

from citywatch.cluster import (
    SERVICE_PERMISSIONS,
    default_ports,
    gateway_permissions,
    nats_subject,
    plan_nodes,
    render_node_config,
    render_users,
)
from cloud_ingest.jetstream import redelivery_verdict, topic_of
from cloud_ingest.provision import ingest_filter_subjects
from cloud_ingest.validate import Accepted, Rejected


def test_each_node_has_its_own_store_and_routes_to_every_peer() -> None:
    specs = plan_nodes(Path("/s"), default_ports(3))
    texts = [render_node_config(s, specs) for s in specs]
    assert [s.store_dir for s in specs] == [Path("/s/n1"), Path("/s/n2"), Path("/s/n3")]
    assert len({(s.client_port, s.cluster_port, s.mqtt_port, s.http_port) for s in specs}) == 3
    for s, text in zip(specs, texts, strict=True):
        assert f"server_name: {s.name}" in text
        assert f'store_dir: "{s.store_dir}"' in text
        assert f"listen: 127.0.0.1:{s.mqtt_port}" in text
        for p in specs:
            assert f"nats-route://127.0.0.1:{p.cluster_port}" in text
        assert "include" not in text
    assert 'include "acc.conf"' in render_node_config(specs[0], specs, include="acc.conf")


def test_default_ports_do_not_collide_across_kinds() -> None:
    ports = [p for quad in default_ports(3) for p in quad]
    assert len(set(ports)) == len(ports)


def test_mqtt_topics_map_to_the_subjects_the_server_uses() -> None:
    assert nats_subject("citywatch/v1/gw/gw-1/cmd/result") == "citywatch.v1.gw.gw-1.cmd.result"
    assert nats_subject("citywatch/v1/gw/+/ack") == "citywatch.v1.gw.*.ack"
    assert topic_of("$MQTT.msgs.citywatch.v1.gw.gw-1.telemetry") == "citywatch/v1/gw/gw-1/telemetry"
    assert topic_of("citywatch.v1.gw.gw-1.telemetry") is None
    assert ingest_filter_subjects(("telemetry",)) == ["$MQTT.msgs.citywatch.v1.gw.*.telemetry"]


def test_a_gateway_may_write_only_its_own_uplink_and_read_only_its_own_cmd_and_ack() -> None:
    p = gateway_permissions("gw-7")
    assert sorted(p["publish"]["allow"]) == sorted(
        nats_subject(f"citywatch/v1/gw/gw-7/{k}") for k in ("telemetry", "events", "status", "cmd/result"))
    assert sorted(p["subscribe"]["allow"]) == sorted(
        [nats_subject("citywatch/v1/gw/gw-7/cmd"), nats_subject("citywatch/v1/gw/gw-7/ack"), "$MQTT.sub.>"])


def test_users_file_has_one_entry_per_identity_with_its_permissions() -> None:
    text = render_users({"cw-rules": "x", "gw-1": "y"}, system_password="z")
    assert "jetstream: enabled" in text and "system_account: SYS" in text
    assert '"citywatch.v1.alarms.*"' in text  # cw-rules' write grant
    assert '"citywatch.v1.gw.gw-1.telemetry"' in text
    assert set(SERVICE_PERMISSIONS) == {"cw-ingest", "cw-rules", "cw-cases", "cw-console"}


def test_a_message_delivered_too_often_becomes_a_dead_letter_that_still_marks_its_seq() -> None:
    from cloud_ingest.fastdecode import RowBatch

    rows = RowBatch("gw-1", "b1", 42, [], 0.0, 0.0)
    v = redelivery_verdict(Accepted("telemetry", "gw-1", rows=rows), 6)
    assert v == Rejected("redelivery_limit", "delivered 6 times without a commit", "gw-1", ("b1", 42), "telemetry")
    bad = Rejected("bad_json", "x", "gw-1")
    assert redelivery_verdict(bad, 9) is bad
