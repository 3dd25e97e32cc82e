#!/usr/bin/python3
"""test_cql_model_server.py - the model CQL server (cql_model_server.py) checked
with an independent codec: python3-cassandra's protocol module encodes every
request and decodes every answer, so the model's frames are held to a reading
of the spec other than its own. Covered: the handshake with and without
credentials (bad ones refused), the schema statements, prepared statements and
their bind metadata, lightweight transactions and what a refused one carries,
clustering order, tuple slices, IN (answered in the model's hash order), paging,
"not set" values, an unknown statement refused, injected errors, the request log.

Run with /usr/bin/python3 (the cassandra module is Debian's python3-cassandra).
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

from cassandra import ConsistencyLevel
from cassandra.protocol import (AuthResponseMessage, BatchMessage, ErrorMessage,
                                ExecuteMessage, OptionsMessage, PrepareMessage,
                                ProtocolHandler, QueryMessage, StartupMessage)
from cassandra.query import UNSET_VALUE, BatchType

HERE = os.path.dirname(os.path.abspath(__file__))
UNSET = UNSET_VALUE


class Model:
    """The model server as a child process."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="cql-model-")
        self.log = os.path.join(self.dir, "requests.log")
        ports = os.path.join(self.dir, "ports")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "cql_model_server.py"),
                                      "--port-file", ports, "--log", self.log] + list(args),
                                     stdout=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(ports):
                break
            time.sleep(0.05)
        self.port, self.control_port = map(int, open(ports).read().split())

    def control(self, line):
        with socket.create_connection(("127.0.0.1", self.control_port)) as s:
            s.sendall((line + "\n").encode())
            return s.makefile().readline().strip()

    def entries(self):
        if not os.path.exists(self.log):
            return []
        return [json.loads(line) for line in open(self.log)]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.stream = 0

    def request(self, msg, result_metadata=None):
        self.stream += 1
        self.s.sendall(ProtocolHandler.encode_message(msg, self.stream, 4, None, False))
        head = self.recv(9)
        version, flags, stream, opcode, length = struct.unpack(">BBhBi", head)
        assert version == 0x84, version
        assert stream == self.stream, (stream, self.stream)
        body = self.recv(length)
        return ProtocolHandler.decode_message(4, {}, stream, flags, opcode, body, None,
                                              result_metadata)

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            assert chunk, "the model closed the connection"
            buf += chunk
        return buf

    def startup(self):
        return self.request(StartupMessage(cqlversion="3.0.0", options={}))

    def query(self, cql, cl=ConsistencyLevel.LOCAL_QUORUM, **kw):
        return self.request(QueryMessage(cql, cl, **kw))

    def prepare(self, cql):
        return self.request(PrepareMessage(cql))

    def execute(self, prepared, values, cl=ConsistencyLevel.LOCAL_QUORUM, **kw):
        params = [None if v is None else v for v in values]
        return self.request(ExecuteMessage(prepared.query_id, params, cl, **kw),
                            result_metadata=prepared.column_metadata)


def big(n):
    return struct.pack(">q", n)


def i32(n):
    return struct.pack(">i", n)


def text(s):
    return s.encode()


SCHEMA = [
    "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = "
    "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE TABLE IF NOT EXISTS ks.v (id uuid PRIMARY KEY, name text, version bigint)",
    "CREATE TABLE IF NOT EXISTS ks.l (scope text, bucket int, at bigint, id uuid, "
    "PRIMARY KEY ((scope, bucket), at, id)) WITH CLUSTERING ORDER BY (at DESC, id DESC)",
]


class ModelServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = Model()

    @classmethod
    def tearDownClass(cls):
        cls.model.stop()

    def conn(self):
        c = Conn(self.model.port)
        self.addCleanup(c.s.close)
        self.assertEqual(type(c.startup()).__name__, "ReadyMessage")
        for q in SCHEMA:
            c.query(q)
        return c

    def test_options_and_schema(self):
        c = Conn(self.model.port)
        self.addCleanup(c.s.close)
        sup = c.request(OptionsMessage())
        self.assertIn("CQL_VERSION", sup.cql_versions and {"CQL_VERSION": 1} or {})
        c.startup()
        r = c.query("CREATE KEYSPACE IF NOT EXISTS other WITH replication = "
                    "{'class': 'NetworkTopologyStrategy', 'dc1': 3}")
        self.assertEqual(r.kind, 5)
        r = c.query("CREATE KEYSPACE IF NOT EXISTS other WITH replication = "
                    "{'class': 'NetworkTopologyStrategy', 'dc1': 3}")
        self.assertEqual(r.kind, 1)  # Void: it existed
        r = c.query("CREATE KEYSPACE other WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        self.assertIsInstance(r, ErrorMessage)
        self.assertEqual(r.code, 0x2400)
        local = c.query("SELECT schema_version FROM system.local WHERE key = 'local'",
                        ConsistencyLevel.ONE)
        peers = c.query("SELECT peer, schema_version FROM system.peers", ConsistencyLevel.ONE)
        self.assertEqual(len(local.parsed_rows), 1)
        self.assertIsInstance(local.parsed_rows[0][0], uuid.UUID)
        self.assertEqual(peers.parsed_rows, [])
        r = c.query("USE other")
        self.assertEqual(r.new_keyspace, "other")

    def test_alter_table_adds_a_column(self):
        c = Conn(self.model.port)
        self.addCleanup(c.s.close)
        c.startup()
        c.query("CREATE KEYSPACE IF NOT EXISTS alt WITH replication = "
                "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        c.query("CREATE TABLE IF NOT EXISTS alt.v (id uuid PRIMARY KEY, name text)")
        oid = uuid.uuid4()
        c.query("INSERT INTO alt.v (id, name) VALUES (%s, 'old')" % oid)
        r = c.query("ALTER TABLE alt.v ADD since bigint")
        self.assertEqual(r.kind, 5)
        self.assertEqual(r.schema_change_event, {"target_type": "TABLE", "change_type": "UPDATED",
                                                 "keyspace": "alt", "table": "v"})
        r = c.query("SELECT id, name, since FROM alt.v WHERE id = %s" % oid)
        self.assertEqual(r.parsed_rows, [(oid, "old", None)])  # old rows: null
        ins = c.prepare("INSERT INTO alt.v (id, name, since) VALUES (?, ?, ?)")
        c.execute(ins, [oid.bytes, text("new"), big(7)])
        r = c.query("SELECT * FROM alt.v WHERE id = %s" % oid)
        self.assertEqual(r.column_names, ["id", "name", "since"])
        self.assertEqual(r.parsed_rows, [(oid, "new", 7)])
        r = c.query("ALTER TABLE alt.v ADD since bigint")  # as Cassandra 4 answers
        self.assertIsInstance(r, ErrorMessage)
        self.assertEqual(r.code, 0x2200)
        self.assertIn("already exists", r.message)
        r = c.query("ALTER TABLE alt.nothing ADD x text")
        self.assertEqual(r.code, 0x2200)
        r = c.query("ALTER TABLE alt.v ADD x sometype")
        self.assertEqual(r.code, 0x2000)

    def test_unknown_statements_fail_loudly(self):
        c = self.conn()
        for cql, code in [("SELECT count(*) FROM ks.v", 0x2000),
                          ("TRUNCATE ks.v", 0x2000),
                          ("SELECT * FROM ks.v WHERE name = 'x'", 0x2200),
                          ("SELECT * FROM ks.nothing", 0x2200),
                          ("SELECT * FROM ks.l WHERE scope = 'all'", 0x2200),
                          ("SELECT * FROM ks.l WHERE scope = 'all' AND bucket = 1 AND id < "
                           "5b6962dd-3f90-4c93-8f61-eabfa4a803e2", 0x2200)]:
            r = c.query(cql)
            self.assertIsInstance(r, ErrorMessage, cql)
            self.assertEqual(r.code, code, cql)

    def test_lightweight_transactions(self):
        c = self.conn()
        ins = c.prepare("INSERT INTO ks.v (id, name, version) VALUES (?, ?, ?) IF NOT EXISTS")
        self.assertEqual([m.name for m in ins.bind_metadata], ["id", "name", "version"])
        self.assertEqual(ins.pk_indexes, [0])
        upd = c.prepare("UPDATE ks.v SET name = ?, version = ? WHERE id = ? IF version = ?")
        sel = c.prepare("SELECT id, name, version FROM ks.v WHERE id = ?")
        oid = uuid.uuid4().bytes
        serial = dict(serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL)
        r = c.execute(ins, [oid, text("a"), big(1)], **serial)
        self.assertEqual(r.column_names, ["[applied]"])
        self.assertEqual(r.parsed_rows, [(True,)])
        r = c.execute(ins, [oid, text("b"), big(1)], **serial)
        self.assertEqual(r.column_names, ["[applied]", "id", "name", "version"])
        self.assertEqual(r.parsed_rows, [(False, uuid.UUID(bytes=oid), "a", 1)])
        r = c.execute(upd, [text("c"), big(3), oid, big(2)], **serial)
        self.assertEqual(r.column_names, ["[applied]", "version"])
        self.assertEqual(r.parsed_rows, [(False, 1)])
        r = c.execute(upd, [UNSET, big(2), oid, big(1)], **serial)
        self.assertEqual(r.parsed_rows, [(True,)])
        r = c.execute(sel, [oid])
        self.assertEqual(r.parsed_rows, [(uuid.UUID(bytes=oid), "a", 2)])  # unset kept "a"
        r = c.execute(upd, [text("x"), big(1), uuid.uuid4().bytes, big(0)], **serial)
        self.assertEqual(r.parsed_rows, [(False,)])  # no row: [applied] alone
        r = c.execute(upd, [text("x"), big(1), oid, UNSET], **serial)
        self.assertEqual(r.code, 0x2200)
        r = c.execute(ins, [oid, text("a"), i32(1)])  # an int for a bigint
        self.assertEqual(r.code, 0x2200)
        r = c.execute(ins, [oid, text("a"), big(1)], ConsistencyLevel.LOCAL_SERIAL)
        self.assertEqual(r.code, 0x2200)

    def test_clustering_slices_in_and_paging(self):
        c = self.conn()
        ins = c.prepare("INSERT INTO ks.l (scope, bucket, at, id) VALUES (?, ?, ?, ?)")
        ids = sorted(uuid.uuid4().bytes for _ in range(6))
        for k, oid in enumerate(ids):
            c.execute(ins, [text("all"), i32(7), big(100 + k // 2), oid])
        page = c.prepare("SELECT at, id FROM ks.l WHERE scope = ? AND bucket = ? AND (at, id) "
                         "< (?, ?) LIMIT ?")
        self.assertEqual([m.name for m in page.bind_metadata],
                         ["scope", "bucket", "at", "id", "[limit]"])
        r = c.execute(page, [text("all"), i32(7), big(102), ids[5], i32(3)])
        want = [(102, uuid.UUID(bytes=ids[4])), (101, uuid.UUID(bytes=ids[3])),
                (101, uuid.UUID(bytes=ids[2]))]
        self.assertEqual(r.parsed_rows, want)
        r = c.query("SELECT at, id FROM ks.l WHERE scope = 'all' AND bucket = 7 ORDER BY at "
                    "ASC, id ASC LIMIT 2")
        self.assertEqual([row[1].bytes for row in r.parsed_rows], ids[:2])
        # IN: every row, in the model's order (not the order asked)
        vins = c.prepare("INSERT INTO ks.v (id, name, version) VALUES (?, ?, ?)")
        keys = [uuid.uuid4().bytes for _ in range(8)]
        for k in keys:
            c.execute(vins, [k, text(k.hex()), big(1)])
        sel = c.prepare("SELECT id, name FROM ks.v WHERE id IN (?, ?, ?, ?, ?, ?, ?, ?)")
        r = c.execute(sel, keys)
        got = [row[0].bytes for row in r.parsed_rows]
        self.assertEqual(sorted(got), sorted(keys))
        self.assertNotEqual(got, keys)  # 1 chance in 40320 to fail by luck
        # paging over a full scan
        scan = c.prepare("SELECT id FROM ks.v")
        seen, state = [], None
        while True:
            r = c.execute(scan, [], fetch_size=3, paging_state=state)
            seen += [row[0].bytes for row in r.parsed_rows]
            state = r.paging_state
            if not state:
                break
            self.assertEqual(len(r.parsed_rows), 3)
        self.assertEqual(len(seen), len(set(seen)))
        self.assertTrue(set(keys) <= set(seen))

    def test_batches_and_deletes(self):
        c = self.conn()
        ins = c.prepare("INSERT INTO ks.l (scope, bucket, at, id) VALUES (?, ?, ?, ?)")
        dele = c.prepare("DELETE FROM ks.l WHERE scope = ? AND bucket = ? AND at = ? AND id = ?")
        a, b = uuid.uuid4().bytes, uuid.uuid4().bytes
        r = c.request(BatchMessage(BatchType.UNLOGGED, [
            (True, ins.query_id, [text("s:x"), i32(1), big(5), a]),
            (True, ins.query_id, [text("s:x"), i32(1), big(6), b]),
            (False, "INSERT INTO ks.l (scope, bucket, at, id) VALUES ('s:y', 1, 5, ?)", [a]),
        ], ConsistencyLevel.LOCAL_QUORUM))
        self.assertEqual(r.kind, 1)
        c.request(BatchMessage(BatchType.UNLOGGED, [
            (True, dele.query_id, [text("s:x"), i32(1), big(6), b])],
            ConsistencyLevel.LOCAL_QUORUM))
        r = c.query("SELECT id FROM ks.l WHERE scope = 's:x' AND bucket = 1")
        self.assertEqual([row[0].bytes for row in r.parsed_rows], [a])
        entry = self.model.entries()[-1]
        self.assertEqual(entry["op"], "QUERY")
        batch = [e for e in self.model.entries() if e["op"] == "BATCH"][-2]
        self.assertEqual(batch["type"], "UNLOGGED")
        self.assertEqual(batch["statements"][0]["values"],
                         ["s:x", 1, 5, str(uuid.UUID(bytes=a))])
        self.assertEqual(batch["consistency"], "LOCAL_QUORUM")

    def test_injected_errors(self):
        c = self.conn()
        self.assertEqual(self.model.control("fail OVERLOADED 2 ks.v"), "ok")
        r = c.query("SELECT id FROM ks.l WHERE scope = 'q' AND bucket = 1")
        self.assertEqual(r.kind, 2)  # not matched
        for _ in range(2):
            r = c.query("SELECT id FROM ks.v WHERE id = 5b6962dd-3f90-4c93-8f61-eabfa4a803e2")
            self.assertEqual(r.code, 0x1001)
        self.assertEqual(self.model.control("faults"), "0")
        self.model.control("fail UNAVAILABLE 1")
        r = c.query("SELECT id FROM ks.v WHERE id = 5b6962dd-3f90-4c93-8f61-eabfa4a803e2")
        self.assertEqual(r.code, 0x1000)
        self.assertEqual(r.info["required_replicas"], 2)

    def test_unprepared(self):
        c = self.conn()
        r = c.request(ExecuteMessage(b"0123456789abcdef", [], ConsistencyLevel.ONE))
        self.assertEqual(r.code, 0x2500)


class AuthTest(unittest.TestCase):
    def test_password_authenticator(self):
        model = Model("--user", "query", "--password", "s3cret")
        try:
            c = Conn(model.port)
            self.addCleanup(c.s.close)
            r = c.startup()
            self.assertEqual(r.authenticator, "org.apache.cassandra.auth.PasswordAuthenticator")
            r = c.query("SELECT key FROM system.local")
            self.assertEqual(r.code, 0x000A)  # not authenticated yet
            r = c.request(AuthResponseMessage(b"\0query\0wrong"))
            self.assertEqual(r.code, 0x0100)
            c = Conn(model.port)
            self.addCleanup(c.s.close)
            c.startup()
            r = c.request(AuthResponseMessage(b"\0query\0s3cret"))
            self.assertEqual(type(r).__name__, "AuthSuccessMessage")
            r = c.query("SELECT key FROM system.local", ConsistencyLevel.ONE)
            self.assertEqual(r.parsed_rows, [("local",)])
        finally:
            model.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
