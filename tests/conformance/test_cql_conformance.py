#!/usr/bin/python3
"""Conformance of lib/src/cql_codec.c with an independent codec: python3-cassandra's
cassandra.protocol (Debian's python3-cassandra 3.25, protocol version 4).

Requests: cql_frames encode prints the frames our encoder makes for a fixed set
of messages; this script builds the same messages with cassandra.protocol's
message classes, encodes them with ProtocolHandler.encode_message, and asserts
that the frames are equal byte for byte.

Responses: this script writes response frames from the specification
(doc/native_protocol_v4.spec) with struct, one of each kind; cql_frames decode
prints what our decoder (and the getters, for the cells) reports; the same
frames are decoded with ProtocolHandler.decode_message and both views are
compared field by field. A few malformed frames must be refused by both.

Usage: test_cql_conformance.py PATH/TO/cql_frames   (run by ctest);
       test_cql_conformance.py --write-corpus DIR    (the valid response frames,
       one file each: the seeds of tests/fuzz/corpus/cql_frame).
"""
import datetime
import json
import struct
import subprocess
import sys
import uuid

try:
    from cassandra import ConsistencyLevel as CL
    from cassandra import cqltypes as T
    from cassandra import type_codes
    from cassandra.auth import PlainTextAuthenticator
    from cassandra.policies import WriteType
    from cassandra.protocol import (AuthResponseMessage, BatchMessage, ExecuteMessage,
                                    OptionsMessage, PrepareMessage, ProtocolHandler,
                                    QueryMessage, StartupMessage, _UNSET_VALUE)
    from cassandra.query import BatchType
except ImportError as e:  # pragma: no cover
    sys.exit("test_cql_conformance: the python3 module 'cassandra' is missing (%s): "
             "install python3-cassandra (scripts/deps.sh)" % e)

V4 = 4
FAILURES = []


def check(what, ok, detail=""):
    if not ok:
        FAILURES.append("%s: %s" % (what, detail))
        print("FAIL %s %s" % (what, detail))
    else:
        print("ok   %s" % what)


# ---------------------------------------------------------------- requests

PAGING = bytes([0x00, 0x11, 0x22, 0x33, 0xff])
BLOB = bytes([0xde, 0xad, 0xbe, 0xef, 0x00])
ID1 = bytes([0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
             0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0])
ID2 = bytes([0xca, 0xfe, 0xba, 0xbe])
UTC = datetime.timezone.utc


def values():
    """cql_frames.c's values(), serialized by cassandra.cqltypes."""
    return [
        T.UTF8Type.serialize('grüße, "world"', V4),
        T.AsciiType.serialize("plain ascii", V4),
        T.Int32Type.serialize(-123456, V4),
        T.Int32Type.serialize(2 ** 31 - 1, V4),
        T.LongType.serialize(-9000000000000000000, V4),
        T.DateType.serialize(datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC), V4),
        T.BooleanType.serialize(True, V4),
        T.BooleanType.serialize(False, V4),
        T.UUIDType.serialize(uuid.UUID("550e8400-e29b-41d4-a716-446655440000"), V4),
        T.TimeUUIDType.serialize(uuid.UUID("c0a80101-7a2b-11ee-b962-0242ac120002"), V4),
        T.BytesType.serialize(BLOB, V4),
        T.BytesType.serialize(b"", V4),
        None,
        _UNSET_VALUE,
    ]


def encode(msg, stream):
    return ProtocolHandler.encode_message(msg, stream, V4, None, False)


def with_skip_metadata(frame, flags_at):
    """cassandra 3.25 keeps skip_meta on its messages but its _write_query_params
    never sets the Skip_metadata flag (0x02): set that one bit of Python's frame,
    at the <flags> byte whose position the caller computes from Python's layout."""
    b = bytearray(frame)
    b[flags_at] |= 0x02
    return bytes(b)


def python_requests():
    v = values()
    out = {}
    out["startup"] = encode(StartupMessage(cqlversion="3.0.0", options={}), 1)
    token = PlainTextAuthenticator("cassandra", "s3cr3t pässword").initial_response()
    out["auth_response"] = encode(AuthResponseMessage(token), 2)
    out["options"] = encode(OptionsMessage(), 3)
    out["prepare"] = encode(PrepareMessage("SELECT status FROM deta.orders WHERE id = ?"), 4)
    out["query_plain"] = encode(QueryMessage("SELECT * FROM deta.orders", CL.ONE), 5)

    insert = ("INSERT INTO deta.t (a, b, c, d, e, f, g, h, i, j, k, l, m, n) VALUES "
              "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    q = QueryMessage(insert, CL.LOCAL_QUORUM, serial_consistency_level=CL.LOCAL_SERIAL,
                     fetch_size=500, paging_state=PAGING, timestamp=1700000000123456)
    q.query_params = v  # QueryMessage's constructor takes none: bound values as EXECUTE's
    q.skip_meta = True
    out["query_all"] = with_skip_metadata(encode(q, 6), 9 + 4 + len(insert.encode()) + 2)

    e = ExecuteMessage(ID1, v, CL.LOCAL_QUORUM, serial_consistency_level=CL.LOCAL_SERIAL,
                       fetch_size=500, paging_state=PAGING, timestamp=1700000000123456,
                       skip_meta=True)
    out["execute_all"] = with_skip_metadata(encode(e, 7), 9 + 2 + len(ID1) + 2)
    out["execute_page"] = encode(ExecuteMessage(ID2, [v[2]], CL.QUORUM, fetch_size=10), 32767)

    items = [
        (True, ID1, [T.UTF8Type.serialize("order-1", V4), T.Int32Type.serialize(3, V4)]),
        (False, "UPDATE deta.t SET v = ? WHERE k = ?", v[10:14]),
        (False, "DELETE FROM deta.t WHERE k = 'x'", []),
        (True, ID2, v[0:1]),
    ]
    out["batch_logged"] = encode(BatchMessage(BatchType.LOGGED, items, CL.EACH_QUORUM), 8)
    out["batch_unlogged"] = encode(
        BatchMessage(BatchType.UNLOGGED, items[:3], CL.ONE, serial_consistency_level=CL.SERIAL,
                     timestamp=1700000000999999), 9)
    return out


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "first difference at byte %d: ours 0x%02x, python 0x%02x" % (i, x, y)
    return "lengths differ: ours %d, python %d bytes" % (len(a), len(b))


def check_requests(prog):
    run = subprocess.run([prog, "encode"], capture_output=True, text=True)
    check("cql_frames encode runs", run.returncode == 0, run.stderr)
    ours = {}
    for line in run.stdout.splitlines():
        name, hexa = line.split(" ")
        ours[name] = bytes.fromhex(hexa)
    theirs = python_requests()
    check("the same requests on both sides", set(ours) == set(theirs),
          "ours only %s, python only %s" % (sorted(set(ours) - set(theirs)),
                                            sorted(set(theirs) - set(ours))))
    for name in sorted(theirs):
        if name in ours:
            check("request %s equals python's" % name, ours[name] == theirs[name],
                  first_difference(ours[name], theirs[name]))


# ---------------------------------------------------------------- responses
# Written from the specification with struct (section 3's notations).

def u8(v): return struct.pack(">B", v)
def u16(v): return struct.pack(">H", v)
def i32(v): return struct.pack(">i", v)
def u32(v): return struct.pack(">I", v)
def i64(v): return struct.pack(">q", v)
def string(s): b = s.encode(); return u16(len(b)) + b
def string_list(xs): return u16(len(xs)) + b"".join(string(x) for x in xs)
def short_bytes(b): return u16(len(b)) + b
def bytes_(b): return i32(-1) if b is None else i32(len(b)) + b


def frame(opcode, body, stream=0, flags=0):
    return struct.pack(">BBhBi", 0x84, flags, stream, opcode, len(body)) + body


def spec(ks, table, name, option):
    return string(ks) + string(table) + string(name) + option


OPT = {name: u16(code) for name, code in [
    ("ascii", 0x01), ("bigint", 0x02), ("blob", 0x03), ("boolean", 0x04), ("counter", 0x05),
    ("int", 0x09), ("timestamp", 0x0B), ("uuid", 0x0C), ("varchar", 0x0D),
    ("timeuuid", 0x0F), ("date", 0x11), ("tinyint", 0x14)]}
LIST_INT = u16(0x20) + OPT["int"]
MAP_TEXT_LIST_INT = u16(0x21) + OPT["varchar"] + LIST_INT
SET_TIMEUUID = u16(0x22) + OPT["timeuuid"]
TUPLE_INT_TEXT = u16(0x31) + u16(2) + OPT["int"] + OPT["varchar"]
UDT = (u16(0x30) + string("deta") + string("address") + u16(2) + string("street") +
       OPT["varchar"] + string("zip") + OPT["int"])
CUSTOM_DURATION = u16(0x00) + string("org.apache.cassandra.db.marshal.DurationType")

U1 = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
TU = uuid.UUID("c0a80101-7a2b-11ee-b962-0242ac120002")


def rows_global():
    cols = [("id", OPT["uuid"]), ("name", OPT["varchar"]), ("code", OPT["ascii"]),
            ("n", OPT["int"]), ("big", OPT["bigint"]), ("at", OPT["timestamp"]),
            ("ok", OPT["boolean"]), ("data", OPT["blob"]), ("tags", LIST_INT),
            ("attrs", MAP_TEXT_LIST_INT), ("seen", SET_TIMEUUID), ("hits", OPT["counter"]),
            ("tu", OPT["timeuuid"])]
    body = i32(2) + i32(0x0001 | 0x0002) + i32(len(cols)) + bytes_(b"\x00\x04page\x01")
    body += string("deta") + string("orders")
    for name, opt in cols:
        body += string(name) + opt
    body += i32(2)
    row1 = [U1.bytes, "Zoë ✓".encode(), b"EUR", i32(-42), i64(2 ** 40), i64(1700000000123),
            b"\x01", b"\x00\xff", i32(2) + bytes_(i32(1)) + bytes_(i32(2)),
            i32(1) + bytes_(b"k") + bytes_(i32(1) + bytes_(i32(7))),
            i32(1) + bytes_(TU.bytes), i64(-5), TU.bytes]
    row2 = [None] * len(cols)
    row2[1] = b""
    row2[6] = b"\x00"
    for cell in row1 + row2:
        body += bytes_(cell)
    return body


def rows_per_column():
    cols = [("k1", "t1", "a", OPT["int"]), ("k2", "t2", "b", TUPLE_INT_TEXT),
            ("k3", "t3", "c", UDT), ("k4", "t4", "d", CUSTOM_DURATION),
            ("k5", "t5", "e", OPT["date"]), ("k6", "t6", "f", OPT["tinyint"])]
    body = i32(2) + i32(0) + i32(len(cols))
    for ks, t, name, opt in cols:
        body += spec(ks, t, name, opt)
    body += i32(1) + bytes_(i32(9)) + bytes_(None) * 3 + bytes_(u32(2 ** 31 + 5)) + bytes_(b"\x07")
    return body


NO_METADATA_TYPES = [("deta", "t", "a", T.BytesType), ("deta", "t", "b", T.BytesType)]


def rows_no_metadata():
    return (i32(2) + i32(0x0004 | 0x0002) + i32(2) + bytes_(b"next") + i32(2) +
            bytes_(b"ab") + bytes_(None) + bytes_(b"") + bytes_(b"\x00\x01"))


def prepared():
    body = i32(4) + short_bytes(ID1) + i32(0x0001) + i32(3) + i32(2) + u16(1) + u16(0)
    body += string("deta") + string("orders")
    body += string("region") + OPT["varchar"] + string("day") + OPT["date"] + string("id") + OPT["uuid"]
    body += i32(0) + i32(2)
    body += spec("deta", "orders", "status", OPT["varchar"]) + spec("deta", "orders", "total", OPT["bigint"])
    return body


def prepared_insert():
    return (i32(4) + short_bytes(ID2) + i32(0) + i32(1) + i32(0) +
            spec("deta", "t", "v", OPT["blob"]) + i32(0x0004) + i32(0))


def error(code, msg, extra=b""):
    return i32(code) + string(msg) + extra


def responses():
    r = []
    r.append(("ready", frame(0x02, b"", 1)))
    r.append(("authenticate", frame(0x03, string("org.apache.cassandra.auth.PasswordAuthenticator"), 1)))
    r.append(("supported", frame(0x06, u16(3) + string("CQL_VERSION") + string_list(["3.4.5"]) +
                                 string("COMPRESSION") + string_list(["snappy", "lz4"]) +
                                 string("PROTOCOL_VERSIONS") + string_list(["3/v3", "4/v4", "5/v5-beta"]), 2)))
    r.append(("auth_challenge", frame(0x0E, bytes_(b"\x00challenge\xff"), 2)))
    r.append(("auth_success", frame(0x10, bytes_(b"welcome"), 2)))
    r.append(("result_void", frame(0x08, i32(1), 3)))
    r.append(("result_rows", frame(0x08, rows_global(), 4)))
    r.append(("result_rows_per_column", frame(0x08, rows_per_column(), 4)))
    r.append(("result_rows_no_metadata", frame(0x08, rows_no_metadata(), 4)))
    r.append(("result_set_keyspace", frame(0x08, i32(3) + string("deta"), 5)))
    r.append(("result_prepared", frame(0x08, prepared(), 6)))
    r.append(("result_prepared_insert", frame(0x08, prepared_insert(), 6)))
    r.append(("schema_keyspace", frame(0x08, i32(5) + string("CREATED") + string("KEYSPACE") + string("deta"), 7)))
    r.append(("schema_table", frame(0x08, i32(5) + string("UPDATED") + string("TABLE") + string("deta") + string("orders"), 7)))
    r.append(("schema_type", frame(0x08, i32(5) + string("DROPPED") + string("TYPE") + string("deta") + string("address"), 7)))
    r.append(("schema_function", frame(0x08, i32(5) + string("CREATED") + string("FUNCTION") + string("deta") +
                                       string("plus") + string_list(["int", "int"]), 7)))
    r.append(("schema_aggregate", frame(0x08, i32(5) + string("CREATED") + string("AGGREGATE") + string("deta") +
                                        string("total") + string_list(["bigint"]), 7)))
    r.append(("flags_tracing_warnings_payload", frame(
        0x08, U1.bytes + string_list(["Batch is large", "second warning"]) +
        u16(1) + string("k") + bytes_(b"v") + i32(3) + string("deta"), 8, flags=0x02 | 0x08 | 0x04)))
    r.append(("event_ignored", frame(0x0C, string("STATUS_CHANGE") + string("UP") + u8(4) + bytes([127, 0, 0, 1]) + i32(9042), -1)))
    for name, code in [("server", 0x0000), ("protocol", 0x000A), ("bad_credentials", 0x0100),
                       ("overloaded", 0x1001), ("bootstrapping", 0x1002), ("truncate", 0x1003),
                       ("syntax", 0x2000), ("unauthorized", 0x2100), ("invalid", 0x2200),
                       ("config", 0x2300)]:
        r.append(("error_" + name, frame(0x00, error(code, "message of %s" % name), 9)))
    r.append(("error_unavailable", frame(0x00, error(0x1000, "Cannot achieve consistency level QUORUM",
                                                      u16(0x0004) + i32(2) + i32(1)), 9)))
    r.append(("error_write_timeout", frame(0x00, error(0x1100, "wt", u16(0x0006) + i32(1) + i32(2) + string("BATCH_LOG")), 9)))
    r.append(("error_read_timeout", frame(0x00, error(0x1200, "rt", u16(0x0001) + i32(0) + i32(1) + u8(1)), 9)))
    r.append(("error_read_failure", frame(0x00, error(0x1300, "rf", u16(0x0005) + i32(2) + i32(3) + i32(1) + u8(0)), 9)))
    r.append(("error_function_failure", frame(0x00, error(0x1400, "ff", string("deta") + string("plus") +
                                                           string_list(["int", "text"])), 9)))
    r.append(("error_write_failure", frame(0x00, error(0x1500, "wf", u16(0x000A) + i32(1) + i32(3) + i32(2) +
                                                        string("UNLOGGED_BATCH")), 9)))
    r.append(("error_already_exists", frame(0x00, error(0x2400, "exists", string("deta") + string("orders")), 9)))
    r.append(("error_unprepared", frame(0x00, error(0x2500, "unprepared", short_bytes(ID1)), 9)))
    return r


# Frames both codecs must refuse (Python by raising).
MALFORMED = [
    ("bad_truncated_unavailable", frame(0x00, error(0x1000, "x", u16(4) + i32(2)))),
    ("bad_truncated_rows", frame(0x08, rows_global()[:-3])),
    ("bad_result_kind", frame(0x08, i32(9))),
]


def type_code(cls, inverse):
    for base in cls.__mro__:
        if base in inverse:
            code = inverse[base]
            # v4 has no Duration id (0x15 is v5's): it only comes as a custom type
            return 0 if code == 0x15 else code
    raise AssertionError("no type code for %r" % cls)


def py_columns(cols, inverse):
    out = []
    for ks, table, name, cls in cols or []:
        code = type_code(cls, inverse)
        subs = [0, 0]
        if code in (0x20, 0x22):
            subs[0] = type_code(cls.subtypes[0], inverse)
        elif code == 0x21:
            subs = [type_code(s, inverse) for s in cls.subtypes]
        out.append({"keyspace": ks, "table": table, "name": name, "type": code,
                    "sub0": subs[0], "sub1": subs[1]})
    return out


def py_cell(cls, value, inverse):
    """What cql_frames prints for a cell, from Python's decoded value."""
    if value is None:
        return {"null": True}
    code = type_code(cls, inverse)
    if code in (0x01, 0x0D):
        return {"text": value}
    if code in (0x02, 0x05, 0x09):
        return {"int": value}
    if code == 0x0B:
        delta = value - datetime.datetime(1970, 1, 1)
        return {"int": (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000}
    if code == 0x04:
        return {"bool": value}
    if code in (0x0C, 0x0F):
        return {"uuid": str(value)}
    if code == 0x03:
        return {"hex": value.hex()}
    return {"hex": cls.serialize(value, V4).hex()}


WRITE_TYPE_NAMES = {v: k for k, v in WriteType.name_to_value.items()}


def py_view(name, msg, inverse):
    """The fields cql_frames prints, from Python's decoded message."""
    view = {"opcode": msg.opcode, "stream": msg.stream_id}
    cls = type(msg).__name__
    if msg.opcode == 0x00:
        view["code"] = msg.code
        view["message"] = msg.message
        info = msg.info
        if msg.code == 0x1000:
            view.update(consistency=info["consistency"], required=info["required_replicas"],
                        alive=info["alive_replicas"])
        elif msg.code in (0x1100, 0x1500):
            view.update(consistency=info["consistency"], received=info["received_responses"],
                        blockfor=info["required_responses"],
                        write_type=WRITE_TYPE_NAMES[info["write_type"]])
            if msg.code == 0x1500:
                view["numfailures"] = info["failures"]
        elif msg.code in (0x1200, 0x1300):
            view.update(consistency=info["consistency"], received=info["received_responses"],
                        blockfor=info["required_responses"], data_present=info["data_retrieved"])
            if msg.code == 0x1300:
                view["numfailures"] = info["failures"]
        elif msg.code == 0x1400:
            view.update(keyspace=info["keyspace"], function=info["function"])
        elif msg.code == 0x2400:
            view.update(keyspace=info["keyspace"], table=info["table"])
        elif msg.code == 0x2500:
            view["unprepared_id"] = info.hex()
    elif cls == "AuthenticateMessage":
        view["authenticator"] = msg.authenticator
    elif cls == "SupportedMessage":
        opts = dict(msg.options)
        opts["CQL_VERSION"] = msg.cql_versions
        view["supported"] = opts
    elif cls == "AuthChallengeMessage":
        view["token"] = msg.challenge.hex()
    elif cls == "AuthSuccessMessage":
        view["token"] = msg.token.encode().hex()
    elif msg.opcode == 0x08:
        view["kind"] = msg.kind
        if msg.kind == 2:
            cols = msg.column_metadata
            if cols is None:  # NO_METADATA: Python read the cells with the metadata we gave it
                view["ncolumns"] = len(NO_METADATA_TYPES)
                view["columns"] = []
                types = [c[3] for c in NO_METADATA_TYPES]
            else:
                view["ncolumns"] = len(cols)
                view["columns"] = py_columns(cols, inverse)
                types = [c[3] for c in cols]
            if msg.paging_state is not None:
                view["paging_state"] = msg.paging_state.hex()
            view["rows"] = [[py_cell(t, v, inverse) for t, v in zip(types, row)]
                            for row in msg.parsed_rows]
        elif msg.kind == 3:
            view["keyspace"] = msg.new_keyspace
        elif msg.kind == 4:
            view["id"] = msg.query_id.hex()
            view["bind"] = py_columns([tuple(c) for c in msg.bind_metadata], inverse)
            view["pk"] = list(msg.pk_indexes)
            view["columns"] = py_columns(msg.column_metadata, inverse)
        elif msg.kind == 5:
            ev = msg.schema_change_event
            view.update(change=ev["change_type"], target=ev["target_type"], keyspace=ev["keyspace"])
            target = ev["target_type"]
            if target == "KEYSPACE":
                view["object"] = ""
            elif target in ("FUNCTION", "AGGREGATE"):
                view["object"] = ev[target.lower()].name
            else:
                view["object"] = ev[target.lower()]
        if msg.warnings:
            view["warnings"] = "; ".join(msg.warnings)
    return view


def c_view(d):
    d = dict(d)
    d.pop("name", None)
    if "supported" in d:
        opts = {}
        for pair in d["supported"].split(";"):
            k, _, v = pair.partition("=")
            opts[k] = v.split(",") if v else []
        d["supported"] = opts

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "x"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(d)


def py_decode(fr):
    version, flags, stream, opcode, length = struct.unpack(">BBhBi", fr[:9])
    meta = [tuple(c) for c in NO_METADATA_TYPES]
    return ProtocolHandler.decode_message(V4, {}, stream, flags, opcode, fr[9:], None, meta)


def check_responses(prog):
    inverse = {}
    for k, v in type_codes.__dict__.items():
        if not k.startswith("_") and isinstance(v, int) and hasattr(T, k):
            inverse.setdefault(getattr(T, k), v)
    frames = responses() + MALFORMED
    stdin = "".join("%s %s\n" % (name, fr.hex()) for name, fr in frames)
    run = subprocess.run([prog, "decode"], input=stdin, capture_output=True, text=True)
    check("cql_frames decode runs", run.returncode == 0, run.stderr)
    ours = {}
    for line in run.stdout.splitlines():
        d = json.loads(line)
        ours[d["name"]] = d
    for name, fr in responses():
        if name not in ours:
            check("response %s decoded by ours" % name, False, "missing")
            continue
        if "refused" in ours[name]:
            check("response %s decoded by ours" % name, False, ours[name]["refused"])
            continue
        py = py_decode(fr)
        if name == "event_ignored":  # ours accepts and drops it; Python reads the event
            check("response %s: Python reads it, ours accepts it" % name,
                  py.event_type == "STATUS_CHANGE" and ours[name]["opcode"] == 0x0C)
            continue
        mine, theirs = c_view(ours[name]), py_view(name, py, inverse)
        check("response %s decodes as Python's" % name, mine == theirs,
              "\n  ours:   %s\n  python: %s" % (json.dumps(mine, sort_keys=True, ensure_ascii=False),
                                               json.dumps(theirs, sort_keys=True, ensure_ascii=False)))
    for name, fr in MALFORMED:
        try:
            py_decode(fr)
            py_refused = False
        except Exception:
            py_refused = True
        check("malformed %s refused by both" % name,
              py_refused and "refused" in ours.get(name, {}),
              "python refused: %s, ours: %s" % (py_refused, ours.get(name)))


def write_corpus(directory):
    """The valid response frames, one file each: the fuzz target's seeds
    (tests/fuzz/corpus/cql_frame)."""
    import os
    for name, fr in responses():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(fr)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--write-corpus":
        write_corpus(sys.argv[2])
        return
    if len(sys.argv) != 2:
        sys.exit("usage: test_cql_conformance.py PATH/TO/cql_frames\n"
                 "       test_cql_conformance.py --write-corpus DIR")
    check_requests(sys.argv[1])
    check_responses(sys.argv[1])
    if FAILURES:
        print("\n%d check(s) failed" % len(FAILURES))
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
