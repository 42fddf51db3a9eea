"""The test broker's KRaft cluster id (churn_spark/kafka_broker.py): no broker started here."""

from __future__ import annotations

from churn_spark.kafka_broker import cluster_id


def test_cluster_id_never_starts_with_a_dash() -> None:
    """0xF8's top six bits are 111110 = 62, base64url's "-": StorageTool would read that id as an option.
    Such a draw is replaced by the next one; 16 zero bytes are 22 "A"s once the "==" padding is gone."""
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    assert cluster_id(lambda: next(draws)) == "A" * 22


def test_cluster_id_is_a_uuid_in_url_safe_base64() -> None:
    ids = {cluster_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 22 and not i.startswith("-") for i in ids)
