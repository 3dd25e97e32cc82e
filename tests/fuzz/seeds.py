#!/usr/bin/env python3
"""seeds.py - writes the seed corpora of the JSON-shaped fuzz targets into
tests/fuzz/corpus/<target>/ (envelope, payloads, order_request, dead_letter,
settings, kafka_stats): valid examples of docs/contracts.md and edge cases of each rule.
Run it again after changing it; it only (over)writes its own files, so the
regression_* inputs and what `make fuzz` merged stay. The other targets' seeds
are small files written by hand (cql_frame's by the conformance test)."""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
ORDER = "3f8a1c2e-9b4d-4e6f-8a1b-2c3d4e5f6a7b"
TS = "2026-11-25T12:38:05.123Z"


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---- payloads, as docs/contracts.md's table gives them ----
PAYLOADS = {
    "order.created": {"orderId": ORDER, "customerId": "c-1", "totalAmount": "19.98",
                      "currency": "USD", "status": "CREATED", "createdAt": TS,
                      "items": [{"itemId": "sku-1", "quantity": 2, "unitPrice": "9.99"}]},
    "inventory.reserved": {"orderId": ORDER, "reservationId": "r-1", "customerId": "c-1",
                           "totalAmount": "19.98", "currency": "USD",
                           "items": [{"itemId": "sku-1", "quantity": 2}], "reservedAt": TS,
                           "holdExpiresAt": "2026-11-25T12:48:05.123Z"},
    "inventory.rejected": {"orderId": ORDER, "customerId": "c-1", "reason": "INSUFFICIENT_STOCK",
                           "itemId": "sku-1", "requested": 2, "available": 0, "rejectedAt": TS},
    "inventory.released": {"orderId": ORDER, "reservationId": "r-1", "reason": "PAYMENT_FAILED",
                           "items": [{"itemId": "sku-1", "quantity": 2}], "releasedAt": TS},
    "payment.authorized": {"orderId": ORDER, "paymentId": "p-1", "customerId": "c-1",
                           "amount": "19.98", "currency": "USD", "authorizedAt": TS},
    "payment.failed": {"orderId": ORDER, "paymentId": "p-1", "customerId": "c-1",
                       "amount": "19.98", "currency": "USD", "reason": "DECLINED_CUSTOMER",
                       "failedAt": TS},
    "delivery.waiting": {"orderId": ORDER, "paymentId": "p-1", "waitingSince": TS, "position": 1},
    "delivery.assigned": {"orderId": ORDER, "deliveryId": "d-1", "driverId": "driver-1",
                          "driverName": "Ada", "assignedAt": TS,
                          "estimatedDeliveryAt": "2026-11-25T13:08:05.123Z"},
    "eta.updated": {"orderId": ORDER, "deliveryId": "d-1", "stage": "ASSIGNED",
                    "estimatedDeliveryAt": "2026-11-25T13:08:05.123Z", "calculatedAt": TS},
    "delivery.picked_up": {"orderId": ORDER, "deliveryId": "d-1", "driverId": "driver-1",
                           "pickedUpAt": TS, "estimatedDeliveryAt": "2026-11-25T13:08:05.123Z"},
    "delivery.delivered": {"orderId": ORDER, "deliveryId": "d-1", "driverId": "driver-1",
                           "deliveredAt": TS},
    "order.cancel_requested": {"orderId": ORDER, "reason": "changed my mind", "requestedAt": TS},
    "inventory.cancel_forwarded": {"orderId": ORDER, "reservationId": "r-1", "reason": None,
                                   "requestedAt": TS, "forwardedAt": TS},
    "inventory.cancel_refused": {"orderId": ORDER, "orderStatus": "INVENTORY_REJECTED",
                                 "reason": None, "requestedAt": TS, "refusedAt": TS},
    "inventory.cancelled": {"orderId": ORDER, "stage": "NONE", "reason": "late",
                            "requestedAt": TS, "cancelledAt": TS},
    "payment.cancel_forwarded": {"orderId": ORDER, "paymentId": "p-1", "reason": "late",
                                 "requestedAt": TS, "forwardedAt": TS},
    "payment.cancel_refused": {"orderId": ORDER, "orderStatus": "PAYMENT_FAILED", "reason": None,
                               "requestedAt": TS, "refusedAt": TS},
    "payment.cancelled": {"orderId": ORDER, "stage": "NONE", "reservationId": "r-1",
                          "reason": None, "requestedAt": TS, "cancelledAt": TS},
    "payment.refunded": {"orderId": ORDER, "paymentId": "p-1", "refundId": "rf-1",
                         "amount": "19.98", "currency": "USD", "reason": "ORDER_CANCELLED",
                         "refundedAt": TS},
    "delivery.cancelled": {"orderId": ORDER, "stage": "ASSIGNED", "deliveryId": "d-1",
                           "driverId": "driver-1", "paymentId": "p-1", "reason": None,
                           "requestedAt": TS, "cancelledAt": TS},
    "delivery.cancel_refused": {"orderId": ORDER, "orderStatus": "PICKED_UP", "reason": None,
                                "requestedAt": TS, "refusedAt": TS},
}
# fuzz_payloads.c's rows: these first, then order-service's and query-api's
# readers with every type in this order.
FIXED_ROWS = ["inventory.reserved", "inventory.cancel_forwarded", "delivery.cancelled",
              "order.created", "order.cancel_requested", "payment.cancelled",
              "payment.authorized", "payment.cancel_forwarded", "PUT", "PATCH"]
TYPES = ["order.created", "inventory.reserved", "inventory.rejected", "inventory.released",
         "payment.authorized", "payment.failed", "delivery.waiting", "delivery.assigned",
         "eta.updated", "delivery.picked_up", "delivery.delivered", "order.cancel_requested",
         "inventory.cancel_forwarded", "inventory.cancel_refused", "inventory.cancelled",
         "payment.cancel_forwarded", "payment.cancel_refused", "payment.cancelled",
         "payment.refunded", "delivery.cancelled", "delivery.cancel_refused"]


def envelope(event_type, payload, **over):
    env = {"eventId": "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d", "eventType": event_type,
           "schemaVersion": 1, "occurredAt": TS, "producedAt": TS, "orderId": ORDER,
           "correlationId": "c0ffee00-1111-4222-8333-444455556666", "producer": "order-service",
           "payload": payload}
    env.update(over)
    return env


def envelope_seeds():
    for t in ("order.created", "payment.authorized", "delivery.cancelled"):
        write("envelope", t.replace(".", "_"), compact(envelope(t, PAYLOADS[t])))
    write("envelope", "upper_case_uuid",
          compact(envelope("order.created", {}, eventId="0B1C2D3E-4F50-4A6B-8C7D-9E0F1A2B3C4D")))
    write("envelope", "offset_instant",
          compact(envelope("eta.updated", {}, occurredAt="2026-11-25T12:38:05.123456789+00:00")))
    write("envelope", "leap_day", compact(envelope("x", {}, occurredAt="2028-02-29T23:59:59Z")))
    write("envelope", "not_a_day", compact(envelope("x", {}, occurredAt="2026-02-29T00:00:00Z")))
    write("envelope", "schema_zero", compact(envelope("x", {}, schemaVersion=0)))
    write("envelope", "long_order_id", compact(envelope("x", {}, orderId="o" * 65)))
    write("envelope", "unicode_producer", compact(envelope("x", {}, producer="caf\u00e9")))
    write("envelope", "payload_array", compact(envelope("x", [])))
    dup = compact(envelope("x", {}))[:-1] + ',"eventId":"0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4e"}'
    write("envelope", "duplicate_key", dup)
    write("envelope", "not_an_object", "[1,2,3]")
    write("envelope", "truncated", compact(envelope("x", {}))[:40])
    write("envelope", "instant", TS)


def payload_seeds():
    for i, t in enumerate(FIXED_ROWS):
        if t in PAYLOADS:
            write("payloads", "%02d_%s" % (i, t), bytes([i]) + compact(PAYLOADS[t]).encode())
    base = len(FIXED_ROWS)
    write("payloads", "08_put", bytes([8]) + b'{"available":10,"expectedVersion":0,"name":"Tea","sellable":true}')
    write("payloads", "09_patch", bytes([9]) + b'{"delta":-3,"expectedVersion":2}')
    for i, t in enumerate(TYPES):
        body = compact(PAYLOADS[t]).encode()
        write("payloads", "%02d_order_%s" % (base + i, t), bytes([base + i]) + body)
        write("payloads", "%02d_query_%s" % (base + len(TYPES) + i, t),
              bytes([base + len(TYPES) + i]) + body)
    # edge cases
    bad = dict(PAYLOADS["payment.authorized"], amount=12.345)
    write("payloads", "06_amount_three_decimals", bytes([6]) + compact(bad).encode())
    other = dict(PAYLOADS["order.created"], orderId="3F8A1C2E-9B4D-4E6F-8A1B-2C3D4E5F6A7B")
    write("payloads", "03_order_id_upper_case", bytes([3]) + compact(other).encode())
    many = dict(PAYLOADS["order.created"],
                items=[{"itemId": "sku-%d" % (i % 3), "quantity": 1, "unitPrice": "1"}
                       for i in range(101)])
    write("payloads", "03_too_many_lines", bytes([3]) + compact(many).encode())


def order_request_seeds():
    write("order_request", "order", compact({"customerId": "c-1", "items": [
        {"itemId": "sku-1", "quantity": 2, "unitPrice": "9.99"}]}))
    write("order_request", "order_currency_numbers", compact({"customerId": "c-1", "currency": "EUR",
        "items": [{"itemId": "sku-1", "quantity": 1, "unitPrice": 9.9},
                  {"itemId": "sku-1", "quantity": 100000, "unitPrice": 0}]}))
    write("order_request", "cancel", compact({"reason": "changed my mind"}))
    write("order_request", "cancel_null_reason", compact({"reason": None}))
    write("order_request", "empty", "")
    write("order_request", "idempotency_key", "3f8a1c2e-9b4d-4e6f-8a1b-2c3d4e5f6a7b")
    write("order_request", "max_total", compact({"customerId": "c", "items": [
        {"itemId": "s", "quantity": 100000, "unitPrice": "99999999.99"}]}))
    write("order_request", "null_currency", compact({"customerId": "c", "currency": None,
                                                      "items": [{"itemId": "s", "quantity": 1,
                                                                 "unitPrice": "1"}]}))
    write("order_request", "nul_in_item", '{"customerId":"c","items":[{"itemId":"a\\u0000b",'
                                          '"quantity":1,"unitPrice":"1"}]}')


def dead_letter_seeds():
    def message(flags, key, value, headers):
        out = bytes([flags]) + struct.pack(">H", 0) + bytes([len(key)]) + key
        out += struct.pack(">H", len(value)) + value
        for name, v in headers:
            out += bytes([len(name)]) + name
            out += bytes([255]) if v is None else bytes([len(v)]) + v
        return out
    env = compact(envelope("order.created", PAYLOADS["order.created"])).encode()
    std = [(b"x-original-topic", b"raw.order-events"), (b"x-original-partition", b"3"),
           (b"x-original-offset", b"1234"), (b"x-consumer-group", b"inventory-service"),
           (b"x-error", b"payload.items[0].quantity must be an integer"),
           (b"x-retry-count", b"0")]
    write("dead_letter", "order_events", message(0x03, ORDER.encode(), env, std))
    write("dead_letter", "payment_events_binary", message(0x0b, b"k\x00ey", b"\xff\xfe\x00",
                                                          std[:2] + [(b"trace", b"\x01\x02")]))
    write("dead_letter", "wrong_original_topic", message(0x07, b"k", b"v",
                                                         [(b"x-original-topic", b"raw.other")]))
    write("dead_letter", "no_key_no_value", message(0x00, b"", b"", [(b"x-retry-count", None)]))
    eta = compact(envelope("eta.updated", PAYLOADS["eta.updated"])).encode()
    write("dead_letter", "eta_events", message(0x13, ORDER.encode(), eta,
                                               [(b"x-original-topic", b"raw.eta-events"),
                                                (b"x-consumer-group", b"query-api"),
                                                (b"x-error", b"payload.calculatedAt is required")]))
    write("dead_letter", "replayed", message(0x0f, b"k", b"v",
                                             [(b"x-replayed-from", b"dlq.delivery-events/0/7"),
                                              (b"x-original-offset", b"99999999999999999999")]))


def settings_seeds():
    names = ["INSTANCE_ID", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SESSION_TIMEOUT_MS",
             "KAFKA_FETCH_WAIT_MAX_MS", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD",
             "PGDATABASE", "PG_PREPARED_STATEMENTS", "PG_STATEMENT_TIMEOUT_MS",
             "PG_LOCK_TIMEOUT_MS", "REDIS_HOST", "REDIS_PORT", "HTTP_PORT",
             "OPERATOR_TOKEN", "READER_TOKEN", "HTTP_READS_NEED_AUTH", "REDIS_USERNAME",
             "REDIS_PASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "HTTP_MAX_CONNECTIONS",
             "HTTP_MAX_CONNECTIONS_PER_CLIENT", "HTTP_HEADER_TIMEOUT_MS",
             "HTTP_BODY_TIMEOUT_MS", "HTTP_HEADER_LIMIT", "KAFKA_SECURITY_PROTOCOL",
             "KAFKA_SASL_MECHANISM", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD",
             "HTTP_BODY_LIMIT", "HTTP_THREADS", "HTTP_CORS_ORIGINS", "LOG_LEVEL",
             "OUTBOX_RETENTION_S", "INBOX_RETENTION_HOURS", "DETA_SHUTDOWN_TIMEOUT_MS",
             "ORDER_IDEMPOTENCY_TTL_HOURS", "PAYMENT_DECLINE_ABOVE",
             "PAYMENT_DECLINE_CUSTOMERS", "PAYMENT_DECLINE_RATE", "PAYMENT_DECLINE_SEED",
             "PAYMENT_GATEWAY_LATENCY_MS", "PAYMENT_GATEWAY_LEDGER", "PAYMENT_WORKERS",
             "PAYMENT_DB_CONNECTIONS", "INVENTORY_CATALOG", "INVENTORY_HOLD_TTL_S",
             "INVENTORY_HOLD_GRACE_S", "DELIVERY_CLOCK_SPEED", "DELIVERY_DRIVERS",
             "DELIVERY_DRIVER_CAPACITY", "DELIVERY_PICKUP_MINUTES", "DELIVERY_SPEED_KMH",
             "DELIVERY_TICK_MS", "QUERY_API_CONSUMER_WORKERS", "QUERY_STORE",
             "QUERY_STREAM_BACKLOG_MAX", "QUERY_STREAM_BUFFER_BYTES", "QUERY_STREAM_GAP_MS",
             "QUERY_STREAM_HEARTBEAT_S", "QUERY_STREAM_MAX", "QUERY_STREAM_RETENTION_HOURS",
             "QUERY_CONSOLE_DIR", "QUERY_CONSOLE_INVENTORY_URL", "QUERY_CONSOLE_ORDER_URL",
             "CASSANDRA_CONTACT_POINTS", "CASSANDRA_KEYSPACE", "CASSANDRA_LOCAL_DC",
             "CASSANDRA_USERNAME", "CASSANDRA_PASSWORD", "CASSANDRA_PORT",
             "CASSANDRA_READ_CONSISTENCY", "CASSANDRA_WRITE_CONSISTENCY",
             "CASSANDRA_SERIAL_CONSISTENCY", "CASSANDRA_REPLICATION_CLASS",
             "CASSANDRA_REPLICATION_FACTOR", "CASSANDRA_REQUEST_TIMEOUT_MS",
             "KAFKA_STATISTICS_INTERVAL_MS", "QUERY_API_BATCH_WAIT_MS", "ORDER_BATCH_WAIT_MS"]
    values = {"KAFKA_STATISTICS_INTERVAL_MS": ["5000", "0", "999", "3600001"],
              "KAFKA_SESSION_TIMEOUT_MS": ["45000", "999", "-0", "4294967296045000"],
              "PGPORT": ["5432", "0x10", " 1", "65536"],
              "PG_PREPARED_STATEMENTS": ["off", "TRUE", "maybe"],
              "HTTP_CORS_ORIGINS": ["http://localhost:5173, https://console.example.com", "*"],
              "LOG_LEVEL": ["WARN", "trace"],
              "PGPASSWORD": ["p" * 200],
              "PAYMENT_DECLINE_ABOVE": ["10000.00", "-1", "1.234"],
              "PAYMENT_DECLINE_CUSTOMERS": ["decline-*, bad-customer", "a*b", ",,"],
              "PAYMENT_DECLINE_RATE": ["0.25", "1", "1.0000001", "0.0000005"],
              "INVENTORY_CATALOG": ["sku-1:100000,sku-limited:25", "sku-1:-1", "sku-1:1,sku-1:2",
                                    " : "],
              "OPERATOR_TOKEN": ["s3cret-token-0123456789abcdef0123", "short",
                                 "bad token with spaces 0123456789"],
              "REDIS_PASSWORD": ["hunter2-hunter2-hunter2"],
              "KAFKA_SECURITY_PROTOCOL": ["SASL_SSL", "sasl_plaintext", "TLS"],
              "KAFKA_SASL_MECHANISM": ["SCRAM-SHA-512", "GSSAPI"],
              "PGSSLMODE": ["verify-full", "require", "tls"],
              "HTTP_MAX_CONNECTIONS": ["4096", "0", "16"],
              "QUERY_STORE": ["cassandra", "mysql"],
              "CASSANDRA_CONTACT_POINTS": ["10.0.0.1,10.0.0.2:9043", "[::1]:9042", ",:"],
              "CASSANDRA_READ_CONSISTENCY": ["LOCAL_QUORUM", "SERIAL", "quorum"],
              "CASSANDRA_PASSWORD": ["hunter2-hunter2"],
              "QUERY_CONSOLE_ORDER_URL": ["http://localhost:8081", "javascript:alert(1)"],
              "DELIVERY_CLOCK_SPEED": ["600", "0"],
              "QUERY_API_BATCH_WAIT_MS": ["20", "0", "1001", "-5"],
              "ORDER_BATCH_WAIT_MS": ["20", "1000", "1001", "2O"]}
    for i, name in enumerate(names):
        for k, v in enumerate(values.get(name, ["1"])):
            write("settings", "%s_%d" % (name.lower(), k), bytes([i]) + v.encode())


# ---- librdkafka's statistics, as its STATISTICS.md describes a consumer's ----
def stats_partition(pid, state, committed, lo, hi, ls, lag):
    return {"partition": pid, "broker": 1, "leader": 1, "desired": state != "none",
            "unknown": False, "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0,
            "xmit_msgq_bytes": 0, "fetchq_cnt": 0, "fetchq_size": 0,
            "fetch_state": state, "query_offset": -1001, "next_offset": committed,
            "app_offset": -1001, "stored_offset": -1001, "stored_leader_epoch": -1,
            "commited_offset": committed, "committed_offset": committed,
            "committed_leader_epoch": -1, "eof_offset": -1001, "lo_offset": lo,
            "hi_offset": hi, "ls_offset": ls, "consumer_lag": lag,
            "consumer_lag_stored": -1, "leader_epoch": -1, "txmsgs": 0, "txbytes": 0,
            "rxmsgs": 3, "rxbytes": 900, "msgs": 3, "rx_ver_drops": 0,
            "msgs_inflight": 0, "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0}


def stats(topics):
    return {"name": "query-api#consumer-2", "client_id": "query-api", "type": "consumer",
            "ts": 5046218113, "time": 1764600000, "age": 5004000, "replyq": 0,
            "msg_cnt": 0, "msg_size": 0, "msg_max": 100000, "msg_size_max": 1073741824,
            "simple_cnt": 0, "metadata_cache_cnt": 4,
            "brokers": {"localhost:9092/1": {"name": "localhost:9092/1", "nodeid": 1,
                                             "state": "UP", "rtt": {"min": 90, "max": 900,
                                                                    "avg": 300, "p99": 800}}},
            "topics": topics,
            "cgrp": {"state": "up", "stateage": 4000, "join_state": "steady",
                     "rebalance_age": 4000, "rebalance_cnt": 1, "assignment_size": 2},
            "tx": 10, "rx": 10, "txmsgs": 0, "rxmsgs": 3}


def kafka_stats_seeds():
    p = stats_partition
    write("kafka_stats", "consumer", compact(stats({
        "raw.order-events": {"topic": "raw.order-events", "age": 4000, "metadata_age": 4000,
                             "partitions": {"0": p(0, "active", 40, 0, 42, 42, 2),
                                            "1": p(1, "none", 7, 0, 9, 9, 2),
                                            "-1": p(-1, "none", -1001, -1001, -1001, -1001,
                                                    -1)}},
        "raw.payment-events": {"partitions": {"2": p(2, "active", -1001, 0, 5, 5, -1)}}})))
    write("kafka_stats", "nothing_committed", compact(stats({
        "t": {"partitions": {"0": p(0, "active", -1001, 0, 0, 0, -1),
                             "1": p(1, "offset-query", -1001, 0, 5, -1, -1),
                             "2": p(2, "active", -1001, 3, 9, -1001, -1)}}})))
    write("kafka_stats", "no_topics", compact({"name": "c", "type": "consumer", "ts": 1}))
    write("kafka_stats", "odd_keys", compact({"topics": {"t": {"partitions": {
        "01": {"fetch_state": "active", "consumer_lag": 1},
        "2147483648": {"fetch_state": "active", "consumer_lag": 1},
        "2147483647": {"fetch_state": "active", "consumer_lag": 9223372036854775807},
        "5": {"fetch_state": "active", "consumer_lag": 1.5},
        "6": {"fetch_state": "stopped", "consumer_lag": 6}}}}}))
    write("kafka_stats", "not_an_object", "[{\"topics\":{}}]")
    write("kafka_stats", "topics_not_an_object", "{\"topics\":[]}")
    write("kafka_stats", "cut_short", compact(stats({"t": {"partitions": {
        "0": p(0, "active", 1, 0, 3, 3, 2)}}}))[:-7])


if __name__ == "__main__":
    envelope_seeds()
    payload_seeds()
    order_request_seeds()
    dead_letter_seeds()
    settings_seeds()
    kafka_stats_seeds()
