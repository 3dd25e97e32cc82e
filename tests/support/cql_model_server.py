#!/usr/bin/python3
"""cql_model_server.py - a model of a Cassandra node for the read model's tests.

It speaks Cassandra's native protocol, version 4 (doc/native_protocol_v4.spec in
apache/cassandra; the frames are written here from that text), over a real
socket, and keeps tables in memory with Cassandra's semantics for exactly the
statement shapes query-api's Cassandra store sends (services/query-api/
read_model_cql.c): a small parser of that subset of CQL, not a database.

  the handshake    OPTIONS, STARTUP (no compression), PasswordAuthenticator when
                   --user/--password are given (the SASL PLAIN token is checked)
  requests         QUERY, PREPARE, EXECUTE (UNPREPARED for an id it never gave),
                   BATCH (LOGGED/UNLOGGED, text or prepared statements), REGISTER
  schema           CREATE KEYSPACE / CREATE TABLE [IF NOT EXISTS] (the answers
                   are Schema_change results, or Void when it existed), ALTER
                   TABLE ... ADD <column> <type> (Invalid "Column with name '<c>'
                   already exists" for a column it has, as Cassandra 4 answers), USE;
                   system.local and system.peers (no peers: the schema agrees)
  statements       INSERT [IF NOT EXISTS], UPDATE ... SET ... WHERE <primary key>
                   [IF col = term AND ...], DELETE of a row or a partition,
                   SELECT cols|* with WHERE = on the partition key, IN on its last
                   column, = on a clustering prefix then one slice (a column or a
                   tuple of columns: < <= > >=), ORDER BY (the clustering order or
                   its reverse), LIMIT, paging (result_page_size, paging_state);
                   no filtering on regular columns (Cassandra refuses it too)
  lightweight transactions  the answer has an [applied] column; a refused INSERT
                   IF NOT EXISTS carries the whole current row, a refused UPDATE
                   IF col = ... the conditioned columns only (none when the row
                   does not exist), like Cassandra
  values           bound values are checked against their columns' types
                   (lengths), null and "not set" (-2) as Cassandra treats them

Anything else is an ERROR (Syntax 0x2000 or Invalid 0x2200), so that a store
change the model does not understand fails loudly rather than passing.

Deliberate differences from a real node, so that tests catch a store relying on
what Cassandra does not promise: rows of several partitions (IN, a full scan)
come in a hash order of their keys, not in the order asked.

Options:
  --host H --port P     where to listen (port 0: any; --port-file says which)
  --port-file F         written once listening: "<cql port> <control port>"
  --user U --password P require PasswordAuthenticator credentials
  --log F               appends a JSON line per QUERY/PREPARE/EXECUTE/BATCH:
                        the CQL, the bound values decoded by column type,
                        the consistency and the serial consistency
  --dc NAME             system.local's data_center (dc1)

The control port takes one line per command and answers one line:
  fail <NAME> <N> [<text>]  the next N QUERY/EXECUTE/BATCH requests (whose CQL
                            contains <text>, when given) are answered with the
                            error NAME: OVERLOADED, UNAVAILABLE, WRITE_TIMEOUT,
                            READ_TIMEOUT, SERVER_ERROR, UNAUTHORIZED, INVALID
  faults                    how many injected errors are still to come
  count <ks.table> [col=v]  rows in the table (whose columns show as v)
  dump <ks.table> [col=v]   the rows, as one JSON array
  exec <cql>                runs a statement (no bound values) as another client
  race <N> <text> <cql>     runs <cql> just before each of the next N requests
                            whose CQL contains <text>: a concurrent writer that
                            gets between a store's read and its write
  log <path>|off            where the request log goes from now on
  ping                      pong
"""

import argparse
import hashlib
import json
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import uuid

# ---- protocol constants (spec sections 2.4, 3, 9) ----

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = 0x05, 0x06, 0x07, 0x08
OP_PREPARE, OP_EXECUTE, OP_REGISTER, OP_BATCH = 0x09, 0x0A, 0x0B, 0x0D
OP_AUTH_CHALLENGE, OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0E, 0x0F, 0x10
OP_NAMES = {OP_QUERY: "QUERY", OP_PREPARE: "PREPARE", OP_EXECUTE: "EXECUTE", OP_BATCH: "BATCH"}

E_SERVER, E_PROTOCOL, E_BAD_CREDENTIALS = 0x0000, 0x000A, 0x0100
E_UNAVAILABLE, E_OVERLOADED = 0x1000, 0x1001
E_WRITE_TIMEOUT, E_READ_TIMEOUT = 0x1100, 0x1200
E_SYNTAX, E_UNAUTHORIZED, E_INVALID = 0x2000, 0x2100, 0x2200
E_ALREADY_EXISTS, E_UNPREPARED = 0x2400, 0x2500

CONSISTENCY = {0: "ANY", 1: "ONE", 2: "TWO", 3: "THREE", 4: "QUORUM", 5: "ALL",
               6: "LOCAL_QUORUM", 7: "EACH_QUORUM", 8: "SERIAL", 9: "LOCAL_SERIAL",
               10: "LOCAL_ONE"}

TYPE_IDS = {"ascii": 0x01, "bigint": 0x02, "blob": 0x03, "boolean": 0x04, "int": 0x09,
            "timestamp": 0x0B, "uuid": 0x0C, "text": 0x0D, "varchar": 0x0D,
            "timeuuid": 0x0F, "inet": 0x10}

UNSET = object()  # a [value] of length -2


class CqlError(Exception):
    def __init__(self, code, message, extra=b""):
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


def invalid(msg):
    return CqlError(E_INVALID, msg)


def syntax(msg):
    return CqlError(E_SYNTAX, msg)


# ---- reading and writing the notations of spec section 3 ----

class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, n):
        if n < 0 or self.i + n > len(self.d):
            raise CqlError(E_PROTOCOL, "truncated body")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def long(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8")

    def long_string(self):
        return self.take(self.int()).decode("utf-8")

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def short_bytes(self):
        return self.take(self.short())

    def value(self):
        n = self.int()
        if n == -1:
            return None
        if n == -2:
            return UNSET
        if n < 0:
            raise CqlError(E_PROTOCOL, "bad [value] length %d" % n)
        return self.take(n)

    def string_map(self):
        return {self.string(): self.string() for _ in range(self.short())}

    def done(self):
        return self.i == len(self.d)


def w_short(n):
    return struct.pack(">H", n)


def w_int(n):
    return struct.pack(">i", n)


def w_string(s):
    b = s.encode("utf-8")
    return w_short(len(b)) + b


def w_bytes(b):
    return w_int(-1) if b is None else w_int(len(b)) + b


def w_short_bytes(b):
    return w_short(len(b)) + b


# ---- values by type ----

def uuid_order(b):
    """Cassandra's UUIDType order: the version first, time-based ones by time,
    the others as unsigned bytes."""
    version = (b[6] >> 4) & 0x0F
    if version == 1:
        u = uuid.UUID(bytes=bytes(b))
        return (version, u.time, bytes(b))
    return (version, 0, bytes(b))


def decode(typ, raw, column):
    if raw is None or raw is UNSET:
        return raw
    fixed = {"int": 4, "bigint": 8, "timestamp": 8, "uuid": 16, "timeuuid": 16, "boolean": 1}
    if typ in fixed and len(raw) not in (0, fixed[typ]):
        raise invalid("Expected %d or 0 byte long for %s of column %s (%d)"
                      % (fixed[typ], typ, column, len(raw)))
    if typ in fixed and len(raw) == 0:
        return None
    if typ == "int":
        return struct.unpack(">i", raw)[0]
    if typ in ("bigint", "timestamp"):
        return struct.unpack(">q", raw)[0]
    if typ in ("uuid", "timeuuid"):
        return bytes(raw)
    if typ == "boolean":
        return raw != b"\x00"
    if typ in ("text", "varchar", "ascii"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("String didn't validate for column %s" % column)
    return bytes(raw)


def encode(typ, v):
    if v is None:
        return None
    if typ == "int":
        return struct.pack(">i", v)
    if typ in ("bigint", "timestamp"):
        return struct.pack(">q", v)
    if typ == "boolean":
        return b"\x01" if v else b"\x00"
    if typ in ("text", "varchar", "ascii"):
        return v.encode("utf-8")
    return bytes(v)


def literal(typ, lit, column):
    """A literal of the CQL text as a value of the column's type."""
    kind, v = lit
    if typ in ("int", "bigint", "timestamp") and kind == "num":
        return int(v)
    if typ in ("text", "varchar", "ascii") and kind == "str":
        return v
    if typ in ("uuid", "timeuuid") and kind == "uuid":
        return uuid.UUID(v).bytes
    if typ == "boolean" and kind == "bool":
        return v
    raise invalid("Invalid %s constant (%s) for \"%s\" of type %s" % (kind, v, column, typ))


def show(typ, v):
    """A value for the request log and the control port's dumps."""
    if v is UNSET:
        return {"unset": True}
    if v is None:
        return None
    if typ in ("uuid", "timeuuid"):
        return str(uuid.UUID(bytes=bytes(v)))
    if isinstance(v, (bytes, bytearray)):
        return {"hex": bytes(v).hex()}
    return v


def sort_key(typ, v):
    if typ in ("uuid", "timeuuid"):
        return uuid_order(v)
    if typ in ("text", "varchar", "ascii"):
        return v.encode("utf-8")
    return v


# ---- the CQL subset: tokens ----

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
  | (?P<num>-?\d+)
  | (?P<qid>"(?:[^"]|"")+")
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<sym><=|>=|!=|[(),=<>.*;?{}:\[\]])
""", re.X)

KEYWORDS = {"select", "from", "where", "and", "in", "limit", "order", "by", "asc", "desc",
            "insert", "into", "values", "if", "not", "exists", "update", "set", "delete",
            "create", "keyspace", "table", "with", "primary", "key", "clustering", "use",
            "allow", "filtering", "true", "false", "null", "alter", "add"}


# keywords that may still name a column or a keyspace (Cassandra's unreserved ones)
NON_RESERVED = {"key", "keyspace", "clustering", "filtering", "exists", "values"}


def tokenize(text):
    out, i = [], 0
    while i < len(text):
        m = TOKEN.match(text, i)
        if not m:
            raise syntax("line 1:%d no viable alternative at character '%s'" % (i, text[i]))
        i = m.end()
        kind = m.lastgroup
        v = m.group(kind)
        if kind == "ws":
            continue
        if kind == "str":
            out.append(("str", v[1:-1].replace("''", "'")))
        elif kind == "qid":
            out.append(("id", v[1:-1].replace('""', '"')))
        elif kind == "id":
            low = v.lower()
            out.append(("kw", low) if low in KEYWORDS else ("id", low))
        else:
            out.append((kind, v))
    return out


class Parser:
    def __init__(self, text):
        self.toks = tokenize(text)
        self.i = 0
        self.markers = []  # per '?': (column name, type) once resolved

    def peek(self, k=0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("eof", None)

    def next(self):
        t = self.peek()
        self.i += 1
        return t

    def accept(self, kind, value=None):
        t = self.peek()
        if t[0] == kind and (value is None or t[1] == value):
            self.i += 1
            return True
        return False

    def expect(self, kind, value=None):
        t = self.next()
        if t[0] != kind or (value is not None and t[1] != value):
            raise syntax("line 1:%d mismatched input '%s' expecting %s"
                         % (self.i, t[1], value or kind))
        return t[1]

    def kw(self, word):
        return self.accept("kw", word)

    def ident(self):
        t = self.next()
        if t[0] == "kw" and t[1] in NON_RESERVED:
            return t[1]
        if t[0] != "id":
            raise syntax("line 1:%d no viable alternative at input '%s'" % (self.i, t[1]))
        return t[1]

    def table_ref(self):
        a = self.ident()
        if self.accept("sym", "."):
            return (a, self.ident())
        return (None, a)

    def term(self):
        t = self.next()
        if t == ("sym", "?"):
            self.markers.append(None)
            return ("marker", len(self.markers) - 1)
        if t[0] == "str":
            return ("lit", ("str", t[1]))
        if t[0] == "num":
            return ("lit", ("num", t[1]))
        if t[0] == "uuid":
            return ("lit", ("uuid", t[1]))
        if t in (("kw", "true"), ("kw", "false")):
            return ("lit", ("bool", t[1] == "true"))
        if t == ("kw", "null"):
            return ("lit", ("null", None))
        raise syntax("line 1:%d no viable alternative at input '%s'" % (self.i, t[1]))

    def end(self):
        self.accept("sym", ";")
        if self.peek()[0] != "eof":
            raise syntax("line 1:%d extraneous input '%s'" % (self.i, self.peek()[1]))

    # relations: col = t | col IN (t, ...) | col op t | (c1, c2) op (t1, t2)
    def relations(self):
        rels = [self.relation()]
        while self.kw("and"):
            rels.append(self.relation())
        return rels

    def relation(self):
        if self.accept("sym", "("):
            cols = [self.ident()]
            while self.accept("sym", ","):
                cols.append(self.ident())
            self.expect("sym", ")")
            op = self.expect("sym")
            if op not in ("<", "<=", ">", ">="):
                raise syntax("a tuple relation must be a slice")
            self.expect("sym", "(")
            terms = [self.term()]
            while self.accept("sym", ","):
                terms.append(self.term())
            self.expect("sym", ")")
            if len(terms) != len(cols):
                raise invalid("Expected %d elements in value tuple, but got %d"
                              % (len(cols), len(terms)))
            return ("slice", cols, op, terms)
        col = self.ident()
        if self.kw("in"):
            self.expect("sym", "(")
            terms = [self.term()]
            while self.accept("sym", ","):
                terms.append(self.term())
            self.expect("sym", ")")
            return ("in", col, terms)
        op = self.expect("sym")
        if op == "=":
            return ("eq", col, self.term())
        if op in ("<", "<=", ">", ">="):
            return ("slice", [col], op, [self.term()])
        raise syntax("line 1:%d unsupported operator %s" % (self.i, op))


PARSED = {}  # text -> statement: a prepared statement is parsed once


def parse(text):
    st = PARSED.get(text)
    if st is None:
        st = PARSED[text] = parse_text(text)
    return st


def parse_text(text):
    p = Parser(text)
    t = p.next()
    if t == ("kw", "select"):
        st = parse_select(p)
    elif t == ("kw", "insert"):
        st = parse_insert(p)
    elif t == ("kw", "update"):
        st = parse_update(p)
    elif t == ("kw", "delete"):
        st = parse_delete(p)
    elif t == ("kw", "create"):
        st = parse_create(p)
    elif t == ("kw", "alter"):
        st = parse_alter(p)
    elif t == ("kw", "use"):
        st = {"kind": "use", "keyspace": p.ident()}
    else:
        raise syntax("line 1:0 no viable alternative at input '%s'" % (t[1],))
    p.end()
    st["markers"] = p.markers
    st["text"] = text
    return st


def parse_select(p):
    cols = None
    if not p.accept("sym", "*"):
        cols = [p.ident()]
        while p.accept("sym", ","):
            cols.append(p.ident())
    p.expect("kw", "from")
    table = p.table_ref()
    where = p.relations() if p.kw("where") else []
    order = []
    if p.kw("order"):
        p.expect("kw", "by")
        while True:
            c = p.ident()
            desc = p.kw("desc")
            if not desc:
                p.kw("asc")
            order.append((c, desc))
            if not p.accept("sym", ","):
                break
    limit = p.term() if p.kw("limit") else None
    if p.kw("allow"):
        p.expect("kw", "filtering")
        raise invalid("the model serves no ALLOW FILTERING query")
    return {"kind": "select", "table": table, "cols": cols, "where": where, "order": order,
            "limit": limit}


def parse_insert(p):
    p.expect("kw", "into")
    table = p.table_ref()
    p.expect("sym", "(")
    cols = [p.ident()]
    while p.accept("sym", ","):
        cols.append(p.ident())
    p.expect("sym", ")")
    p.expect("kw", "values")
    p.expect("sym", "(")
    terms = [p.term()]
    while p.accept("sym", ","):
        terms.append(p.term())
    p.expect("sym", ")")
    if len(terms) != len(cols):
        raise invalid("Unmatched column names/values")
    if len(set(cols)) != len(cols):
        raise invalid("Multiple definitions found for a column")
    ine = False
    if p.kw("if"):
        p.expect("kw", "not")
        p.expect("kw", "exists")
        ine = True
    return {"kind": "insert", "table": table, "cols": cols, "terms": terms,
            "if_not_exists": ine}


def parse_update(p):
    table = p.table_ref()
    p.expect("kw", "set")
    sets = []
    while True:
        c = p.ident()
        p.expect("sym", "=")
        sets.append((c, p.term()))
        if not p.accept("sym", ","):
            break
    p.expect("kw", "where")
    where = p.relations()
    conds = None
    if p.kw("if"):
        if p.kw("exists"):
            conds = "exists"
        else:
            conds = []
            while True:
                c = p.ident()
                p.expect("sym", "=")
                conds.append((c, p.term()))
                if not p.kw("and"):
                    break
    return {"kind": "update", "table": table, "sets": sets, "where": where, "conds": conds}


def parse_delete(p):
    p.expect("kw", "from")
    table = p.table_ref()
    p.expect("kw", "where")
    return {"kind": "delete", "table": table, "where": p.relations()}


def parse_map(p):
    p.expect("sym", "{")
    m = {}
    while True:
        k = p.next()
        if k[0] != "str":
            raise syntax("a map key must be a string")
        p.expect("sym", ":")
        v = p.next()
        if v[0] not in ("str", "num"):
            raise syntax("a map value must be a string or a number")
        m[k[1]] = v[1]
        if not p.accept("sym", ","):
            break
    p.expect("sym", "}")
    return m


def parse_create(p):
    if p.kw("keyspace"):
        ine = False
        if p.kw("if"):
            p.expect("kw", "not")
            p.expect("kw", "exists")
            ine = True
        name = p.ident()
        p.expect("kw", "with")
        opt = p.ident()
        if opt != "replication":
            raise syntax("expected replication")
        p.expect("sym", "=")
        return {"kind": "create_keyspace", "name": name, "if_not_exists": ine,
                "replication": parse_map(p)}
    p.expect("kw", "table")
    ine = False
    if p.kw("if"):
        p.expect("kw", "not")
        p.expect("kw", "exists")
        ine = True
    table = p.table_ref()
    p.expect("sym", "(")
    columns, pk, ck = [], None, []
    while True:
        if p.kw("primary"):
            p.expect("kw", "key")
            p.expect("sym", "(")
            if p.accept("sym", "("):
                pk = [p.ident()]
                while p.accept("sym", ","):
                    pk.append(p.ident())
                p.expect("sym", ")")
            else:
                pk = [p.ident()]
            while p.accept("sym", ","):
                ck.append(p.ident())
            p.expect("sym", ")")
        else:
            name = p.ident()
            typ = p.next()
            if typ[0] not in ("id", "kw") or typ[1] not in TYPE_IDS:
                raise syntax("unknown type %s" % (typ[1],))
            columns.append((name, typ[1]))
            if p.kw("primary"):
                p.expect("kw", "key")
                pk = [name]
        if not p.accept("sym", ","):
            break
    p.expect("sym", ")")
    order = {}
    if p.kw("with"):
        p.expect("kw", "clustering")
        p.expect("kw", "order")
        p.expect("kw", "by")
        p.expect("sym", "(")
        while True:
            c = p.ident()
            desc = p.kw("desc")
            if not desc:
                p.expect("kw", "asc")
            order[c] = desc
            if not p.accept("sym", ","):
                break
        p.expect("sym", ")")
    if pk is None:
        raise invalid("No PRIMARY KEY specifed for table")
    names = [c for c, _ in columns]
    for c in pk + ck + list(order):
        if c not in names:
            raise invalid("Unknown definition %s referenced in PRIMARY KEY" % c)
    if list(order) and list(order) != ck[:len(order)]:
        raise invalid("The order of columns in the CLUSTERING ORDER directive must be the "
                      "one of the clustering key")
    return {"kind": "create_table", "table": table, "if_not_exists": ine,
            "columns": columns, "pk": pk, "ck": [(c, order.get(c, False)) for c in ck]}


def parse_alter(p):
    """ALTER TABLE <table> ADD <column> <type>: the one shape the store sends (a
    column added to an existing keyspace's table)."""
    p.expect("kw", "table")
    table = p.table_ref()
    p.expect("kw", "add")
    name = p.ident()
    typ = p.next()
    if typ[0] not in ("id", "kw") or typ[1] not in TYPE_IDS:
        raise syntax("unknown type %s" % (typ[1],))
    return {"kind": "alter_table", "table": table, "column": (name, typ[1])}


# ---- the tables ----

class Table:
    def __init__(self, ks, name, columns, pk, ck):
        self.ks, self.name = ks, name
        self.types = dict(columns)
        self.pk = pk
        self.ck = ck  # [(name, desc)]
        self.ck_names = [c for c, _ in ck]
        self.partitions = {}  # pk tuple -> {ck tuple: row dict}
        self.columns_changed()

    def columns_changed(self):
        keys = set(self.pk) | set(self.ck_names)
        self.regular = sorted(c for c in self.types if c not in keys)
        self.star = self.pk + self.ck_names + self.regular  # SELECT *'s order

    def add_column(self, name, typ):
        if name in self.types:
            raise invalid("Column with name '%s' already exists" % name)
        self.types[name] = typ  # existing rows have no cell: null
        self.columns_changed()

    def column(self, c):
        if c not in self.types:
            raise invalid("Undefined column name %s in table %s.%s" % (c, self.ks, self.name))
        return self.types[c]

    def ck_sort_key(self, ckt):
        out = []
        for (name, desc), v in zip(self.ck, ckt):
            k = sort_key(self.types[name], v)
            out.append(Reverse(k) if desc else k)
        return tuple(out)

    def rows_of(self, pkt):
        part = self.partitions.get(pkt, {})
        return [part[c] for c in sorted(part, key=self.ck_sort_key)]

    def live(self, row):
        return row.get("\0marker") or any(row.get(c) is not None for c in self.regular)


class Reverse:
    """Reverses the order of a key (a DESC clustering column)."""
    __slots__ = ("k",)

    def __init__(self, k):
        self.k = k

    def __lt__(self, o):
        return o.k < self.k

    def __eq__(self, o):
        return self.k == o.k


def partition_order(table, pkt):
    """The order of rows of several partitions: a hash of the key, as a stand-in
    for the token order (which no client may take for the order asked)."""
    raw = b"".join(encode(table.types[c], v) or b"" for c, v in zip(table.pk, pkt))
    return hashlib.md5(raw).digest()


class Store:
    def __init__(self, dc):
        self.lock = threading.RLock()
        self.keyspaces = {}  # name -> {"replication": map, "tables": {}}
        self.schema_version = uuid.uuid4().bytes
        self.dc = dc
        self.host_id = uuid.uuid4().bytes
        self.prepared = {}  # id -> parsed statement
        self.faults = []  # [code, remaining, text]
        self.races = []  # [remaining, text, cql]: run cql first when a request has text

    def table(self, ref, session_ks):
        ks, name = ref
        ks = ks or session_ks
        if ks is None:
            raise invalid("No keyspace has been specified. USE a keyspace, or explicitly "
                          "specify keyspace.tablename")
        if ks not in self.keyspaces:
            raise invalid("Keyspace %s does not exist" % ks)
        t = self.keyspaces[ks]["tables"].get(name)
        if t is None:
            raise invalid("unconfigured table %s" % name)
        return t


# ---- statements: the markers' columns (PREPARE) ----

LIMIT_SPEC = ("[limit]", "int")


def resolve_markers(store, st, session_ks):
    """Fills st["markers"] with each '?''s (column, type) and returns the table (or
    None for statements on no table)."""
    kind = st["kind"]
    if kind in ("create_keyspace", "create_table", "alter_table", "use"):
        if st["markers"]:
            raise invalid("bind markers are not allowed in schema statements")
        return None
    if st["table"][0] == "system" or (st["table"][0] is None and session_ks == "system"):
        t = system_table(store, st["table"][1])
    else:
        t = store.table(st["table"], session_ks)
    m = st["markers"]

    def mark(term, col):
        if term[0] == "marker":
            m[term[1]] = (col, t.column(col))

    if kind == "select":
        for c in st["cols"] or []:
            t.column(c)
        for r in st["where"]:
            mark_relation(r, mark, t)
        if st["limit"] is not None and st["limit"][0] == "marker":
            m[st["limit"][1]] = LIMIT_SPEC
    elif kind == "insert":
        for c, term in zip(st["cols"], st["terms"]):
            t.column(c)
            mark(term, c)
    elif kind == "update":
        for c, term in st["sets"]:
            t.column(c)
            mark(term, c)
        for r in st["where"]:
            mark_relation(r, mark, t)
        if isinstance(st["conds"], list):
            for c, term in st["conds"]:
                t.column(c)
                mark(term, c)
    elif kind == "delete":
        for r in st["where"]:
            mark_relation(r, mark, t)
    return t


def mark_relation(r, mark, t):
    if r[0] == "eq":
        t.column(r[1])
        mark(r[2], r[1])
    elif r[0] == "in":
        t.column(r[1])
        for term in r[2]:
            mark(term, r[1])
    else:
        for c, term in zip(r[1], r[3]):
            t.column(c)
            mark(term, c)


def system_table(store, name):
    if name == "local":
        t = Table("system", "local", [("key", "text"), ("bootstrapped", "text"),
                                      ("cluster_name", "text"), ("cql_version", "text"),
                                      ("data_center", "text"), ("host_id", "uuid"),
                                      ("partitioner", "text"), ("rack", "text"),
                                      ("release_version", "text"),
                                      ("schema_version", "uuid")], ["key"], [])
        t.partitions[("local",)] = {(): {
            "key": "local", "bootstrapped": "COMPLETED", "cluster_name": "model",
            "cql_version": "3.4.5", "data_center": store.dc, "host_id": store.host_id,
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner", "rack": "rack1",
            "release_version": "4.1.0-model", "schema_version": store.schema_version,
            "\0marker": True}}
        return t
    if name == "peers":
        return Table("system", "peers", [("peer", "inet"), ("data_center", "text"),
                                         ("host_id", "uuid"), ("rack", "text"),
                                         ("release_version", "text"), ("rpc_address", "inet"),
                                         ("schema_version", "uuid")], ["peer"], [])
    raise invalid("unconfigured table %s" % name)


# ---- statements: execution ----

class Bound:
    """A statement with its values: terms resolve to Python values."""

    def __init__(self, st, table, values):
        self.st, self.t = st, table
        markers = st["markers"]
        if len(values) != len(markers):
            raise invalid("There were %d markers(?) in CQL but %d bound variables"
                          % (len(markers), len(values)))
        self.values = [decode(spec[1], v, spec[0]) for spec, v in zip(markers, values)]

    def term(self, term, col):
        if term[0] == "marker":
            return self.values[term[1]]
        if term[1][0] == "null":
            return None
        return literal(self.t.types[col] if col in self.t.types else "int", term[1], col)

    def key_value(self, term, col):
        v = self.term(term, col)
        if v is UNSET:
            raise invalid("Invalid unset value for column %s" % col)
        if v is None:
            raise invalid("Invalid null value in condition for column %s" % col)
        return v


def restrictions(b, where):
    """{col: ("eq", v) | ("in", [v]) } and the slice (cols, op, values) or None."""
    eqs, slc = {}, None
    for r in where:
        if r[0] == "eq":
            if r[1] in eqs:
                raise invalid("%s cannot be restricted by more than one relation" % r[1])
            eqs[r[1]] = ("eq", b.key_value(r[2], r[1]))
        elif r[0] == "in":
            vals = []
            for term in r[2]:
                v = b.key_value(term, r[1])
                if v not in vals:
                    vals.append(v)
            eqs[r[1]] = ("in", vals)
        else:
            if slc is not None:
                raise invalid("More than one slice restriction (the model serves one)")
            slc = (r[1], r[2], [b.key_value(term, c) for c, term in zip(r[1], r[3])])
    return eqs, slc


def partition_keys(t, eqs, need):
    """The partition keys the restrictions name, or None for a full scan."""
    given = [c for c in t.pk if c in eqs]
    if not given:
        if need:
            raise invalid("Some partition key parts are missing: %s" % ", ".join(t.pk))
        return None
    if len(given) != len(t.pk):
        missing = [c for c in t.pk if c not in eqs]
        raise invalid("Some partition key parts are missing: %s" % ", ".join(missing))
    keys = [()]
    for i, c in enumerate(t.pk):
        kind, v = eqs[c]
        if kind == "in" and i != len(t.pk) - 1:
            raise invalid("Partition KEY part %s cannot be restricted by IN relation (only "
                          "the last part of the partition key can)" % c)
        vals = v if kind == "in" else [v]
        keys = [k + (x,) for k in keys for x in vals]
    return keys


def clustering_filter(t, eqs, slc):
    """A predicate on a clustering tuple, checking Cassandra's rules for which
    clustering restrictions may be combined."""
    for c in eqs:
        if c not in t.pk and c not in t.ck_names:
            raise invalid("Cannot execute this query as it might involve data filtering and "
                          "thus may have unpredictable performance (%s is a regular column)"
                          % c)
    prefix = []
    for c in t.ck_names:
        if c in eqs:
            if eqs[c][0] == "in":
                raise invalid("the model serves no IN on a clustering column")
            prefix.append(eqs[c][1])
        else:
            break
    for c in t.ck_names[len(prefix):]:
        if c in eqs:
            raise invalid("PRIMARY KEY column \"%s\" cannot be restricted as preceding column "
                          "\"%s\" is not restricted" % (c, t.ck_names[len(prefix)]))
    if slc is not None:
        cols, op, vals = slc
        for c in cols:
            if c not in t.ck_names:
                raise invalid("Cannot execute this query: slice on %s, not a clustering column"
                              % c)
        start = t.ck_names.index(cols[0])
        if start != len(prefix) or t.ck_names[start:start + len(cols)] != cols:
            raise invalid("Clustering columns must appear in the PRIMARY KEY order in "
                          "multi-column relations")
    n = len(prefix)

    def ok(ckt):
        if tuple(ckt[:n]) != tuple(prefix):
            return False
        if slc is None:
            return True
        cols, op, vals = slc
        have = tuple(sort_key(t.types[c], ckt[n + i]) for i, c in enumerate(cols))
        want = tuple(sort_key(t.types[c], v) for c, v in zip(cols, vals))
        return {"<": have < want, "<=": have <= want, ">": have > want,
                ">=": have >= want}[op]
    return ok


def run_select(store, b, session):
    st, t = b.st, b.t
    eqs, slc = restrictions(b, st["where"])
    keys = partition_keys(t, eqs, False)
    ok = clustering_filter(t, eqs, slc)
    if keys is None:
        if eqs or slc:
            raise invalid("Cannot execute this query as it might involve data filtering")
        keys = list(t.partitions)
    if len(keys) > 1:
        keys = sorted(keys, key=lambda k: partition_order(t, k))
    reverse = False
    if st["order"]:
        if len(keys) > 1:
            raise invalid("Cannot page queries with both ORDER BY and a IN restriction on "
                          "the partition key")
        names = [c for c, _ in st["order"]]
        if names != t.ck_names[:len(names)]:
            raise invalid("Order by currently only supports the ordering of columns following "
                          "their declared order in the PRIMARY KEY")
        flips = [d != t.ck[i][1] for i, (_, d) in enumerate(st["order"])]
        if any(flips) != all(flips):
            raise invalid("Unsupported order by relation")
        reverse = all(flips)
    rows = []
    for k in keys:
        part = t.rows_of(k)
        if reverse:
            part.reverse()
        rows += [r for r in part
                 if t.live(r) and ok(tuple(r[c] for c in t.ck_names))]
    if st["limit"] is not None:
        limit = b.term(st["limit"], "[limit]") if st["limit"][0] == "marker" else \
            int(st["limit"][1][1])
        if limit is None or limit is UNSET or limit <= 0:
            raise invalid("LIMIT must be strictly positive")
        rows = rows[:limit]
    cols = st["cols"] or t.star
    return cols, [[r.get(c) for c in cols] for r in rows]


def primary_key(b, eqs):
    t = b.t
    for c in t.pk + t.ck_names:
        if c not in eqs or eqs[c][0] != "eq":
            raise invalid("Some clustering keys are missing: %s" % c
                          if c in t.ck_names else "Some partition key parts are missing: %s" % c)
    extra = [c for c in eqs if c not in t.pk and c not in t.ck_names]
    if extra:
        raise invalid("Non PRIMARY KEY columns found in where clause: %s" % ", ".join(extra))
    return (tuple(eqs[c][1] for c in t.pk), tuple(eqs[c][1] for c in t.ck_names))


def applied_result(t, applied, cols=(), row=None):
    names = ["[applied]"] + list(cols)
    types = {"[applied]": "boolean"}
    types.update({c: t.types[c] for c in cols})
    return ("rows", t, names, types, [[applied] + [row.get(c) for c in cols]] if row else
            [[applied]])


def run_insert(b):
    st, t = b.st, b.t
    vals = {c: b.term(term, c) for c, term in zip(st["cols"], st["terms"])}
    for c in t.pk + t.ck_names:
        if c not in vals:
            raise invalid("Some %s key parts are missing: %s"
                          % ("partition" if c in t.pk else "clustering", c))
        if vals[c] is None or vals[c] is UNSET:
            raise invalid("Invalid %s value for %s key column %s"
                          % ("null" if vals[c] is None else "unset",
                             "partition" if c in t.pk else "clustering", c))
    pkt = tuple(vals[c] for c in t.pk)
    ckt = tuple(vals[c] for c in t.ck_names)
    part = t.partitions.setdefault(pkt, {})
    cur = part.get(ckt)
    if st["if_not_exists"] and cur is not None and t.live(cur):
        return applied_result(t, False, t.star, cur)
    row = cur if cur is not None else {}
    for c, v in vals.items():
        if v is not UNSET:
            row[c] = v
    row["\0marker"] = True
    part[ckt] = row
    return applied_result(t, True) if st["if_not_exists"] else ("void",)


def run_update(b):
    st, t = b.st, b.t
    eqs, slc = restrictions(b, st["where"])
    if slc is not None:
        raise invalid("Slice restrictions are not supported on the clustering columns in "
                      "UPDATE statements")
    pkt, ckt = primary_key(b, eqs)
    for c, _ in st["sets"]:
        if c in t.pk or c in t.ck_names:
            raise invalid("PRIMARY KEY part %s found in SET part" % c)
    part = t.partitions.get(pkt, {})
    cur = part.get(ckt)
    exists = cur is not None and t.live(cur)
    conds = st["conds"]
    if conds == "exists":
        if not exists:
            return applied_result(t, False)
    elif conds is not None:
        want = [(c, b.term(term, c)) for c, term in conds]
        for c, v in want:
            if v is UNSET:
                raise invalid("Invalid 'unset' value in condition")
        if not exists:
            return applied_result(t, False)
        if any(cur.get(c) != v for c, v in want):
            return applied_result(t, False, [c for c, _ in want], cur)
    row = t.partitions.setdefault(pkt, {}).setdefault(ckt, {c: v for c, v in
                                                             zip(t.pk + t.ck_names,
                                                                 pkt + ckt)})
    for c, term in st["sets"]:
        v = b.term(term, c)
        if v is not UNSET:
            row[c] = v
    return applied_result(t, True) if conds is not None else ("void",)


def run_delete(b):
    t = b.t
    eqs, slc = restrictions(b, b.st["where"])
    if slc is not None:
        raise invalid("the model deletes rows or partitions, not ranges")
    keys = partition_keys(t, eqs, True)
    if len(keys) != 1:
        raise invalid("the model deletes one partition at a time")
    ck = [c for c in t.ck_names if c in eqs]
    extra = [c for c in eqs if c not in t.pk and c not in t.ck_names]
    if extra:
        raise invalid("Non PRIMARY KEY columns found in where clause: %s" % ", ".join(extra))
    part = t.partitions.get(keys[0])
    if ck and ck != t.ck_names:
        raise invalid("the model deletes whole rows or partitions")
    if part is not None:
        if ck:
            part.pop(tuple(eqs[c][1] for c in t.ck_names), None)
        else:
            part.clear()
    return ("void",)


def run_schema(store, st):
    if st["kind"] == "create_keyspace":
        name = st["name"]
        rep = st["replication"]
        cls = rep.get("class", "")
        if cls not in ("SimpleStrategy", "NetworkTopologyStrategy"):
            raise CqlError(0x2300, "Unable to find replication strategy class '%s'" % cls)
        if cls == "SimpleStrategy" and "replication_factor" not in rep:
            raise CqlError(0x2300, "SimpleStrategy requires a replication_factor strategy "
                                   "option.")
        if name in store.keyspaces:
            if st["if_not_exists"]:
                return ("void",)
            raise CqlError(E_ALREADY_EXISTS, "Keyspace %s already exists" % name,
                           w_string(name) + w_string(""))
        store.keyspaces[name] = {"replication": rep, "tables": {}}
        store.schema_version = uuid.uuid4().bytes
        return ("schema", "CREATED", "KEYSPACE", name, None)
    ks, name = st["table"]
    if ks is None:
        raise invalid("No keyspace has been specified")
    if ks not in store.keyspaces:
        raise invalid("Keyspace %s doesn't exist" % ks)
    tables = store.keyspaces[ks]["tables"]
    if st["kind"] == "alter_table":
        if name not in tables:
            raise invalid("Table '%s.%s' doesn't exist" % (ks, name))
        tables[name].add_column(*st["column"])
        store.schema_version = uuid.uuid4().bytes
        return ("schema", "UPDATED", "TABLE", ks, name)
    if name in tables:
        if st["if_not_exists"]:
            return ("void",)
        raise CqlError(E_ALREADY_EXISTS, "Table %s.%s already exists" % (ks, name),
                       w_string(ks) + w_string(name))
    tables[name] = Table(ks, name, st["columns"], st["pk"], st["ck"])
    store.schema_version = uuid.uuid4().bytes
    return ("schema", "CREATED", "TABLE", ks, name)


def execute(store, session, st, values):
    """Runs a parsed statement with its bound values (raw bytes); returns a result
    tuple for encode_result."""
    if st["kind"] == "use":
        if st["keyspace"] not in store.keyspaces:
            raise invalid("Keyspace '%s' does not exist" % st["keyspace"])
        session.keyspace = st["keyspace"]
        return ("keyspace", st["keyspace"])
    if st["kind"] in ("create_keyspace", "create_table", "alter_table"):
        return run_schema(store, st)
    t = resolve_markers(store, st, session.keyspace)
    b = Bound(st, t, values)
    if st["kind"] == "select":
        cols, rows = run_select(store, b, session)
        return ("rows", t, cols, {c: t.types[c] for c in cols}, rows)
    if t.ks == "system":
        raise CqlError(E_UNAUTHORIZED, "system keyspace is not user-modifiable.")
    return {"insert": run_insert, "update": run_update, "delete": run_delete}[st["kind"]](b)


# ---- results (spec 4.2.5) ----

def col_specs(t, cols, types):
    body = w_int(0x0001) + w_int(len(cols)) + w_string(t.ks) + w_string(t.name)
    for c in cols:
        body += w_string(c) + w_short(TYPE_IDS[types[c]])
    return body


def encode_result(res, skip_metadata=False, paging=None):
    kind = res[0]
    if kind == "void":
        return w_int(0x0001)
    if kind == "keyspace":
        return w_int(0x0003) + w_string(res[1])
    if kind == "schema":
        _, change, target, ks, name = res
        body = w_int(0x0005) + w_string(change) + w_string(target) + w_string(ks)
        if target == "TABLE":
            body += w_string(name)
        return body
    _, t, cols, types, rows = res
    page_size, offset, token = paging or (0, 0, b"")
    more = False
    if page_size > 0:
        more = offset + page_size < len(rows)
        rows = rows[offset:offset + page_size]
    flags = 0x0001 | (0x0002 if more else 0) | (0x0004 if skip_metadata else 0)
    body = w_int(0x0002) + w_int(flags) + w_int(len(cols))
    if more:
        body += w_bytes(token + b":" + str(offset + page_size).encode())
    if not skip_metadata:
        body += w_string(t.ks) + w_string(t.name)
        for c in cols:
            body += w_string(c) + w_short(TYPE_IDS[types[c]])
    body += w_int(len(rows))
    for r in rows:
        for c, v in zip(cols, r):
            body += w_bytes(encode(types[c], v))
    return body


def prepared_result(store, st, session, pid):
    t = resolve_markers(store, st, session.keyspace)
    markers = st["markers"]
    body = w_int(0x0004) + w_short_bytes(pid)
    # metadata of the bind markers: the partition key's positions when all of it
    # is bound by markers
    pk_idx = []
    if t is not None:
        for c in t.pk:
            idx = [i for i, m in enumerate(markers) if m and m[0] == c]
            if len(idx) != 1:
                pk_idx = []
                break
            pk_idx.append(idx[0])
    body += w_int(0x0001 if t is not None else 0) + w_int(len(markers)) + w_int(len(pk_idx))
    for i in pk_idx:
        body += w_short(i)
    if t is not None:
        body += w_string(t.ks) + w_string(t.name)
    for name, typ in markers:
        body += w_string(name) + w_short(TYPE_IDS[typ])
    # result metadata: a SELECT's columns; nothing known ahead for the others
    if st["kind"] == "select":
        cols = st["cols"] or t.star
        body += col_specs(t, cols, t.types)
    else:
        body += w_int(0x0004) + w_int(0)
    return body


# ---- requests ----

def read_params(r):
    """<query_parameters> (spec 4.1.4)."""
    p = {"consistency": r.short()}
    flags = r.byte()
    p["values"] = []
    if flags & 0x01:
        p["values"] = [r.value() for _ in range(r.short())]
    if flags & 0x40:
        raise CqlError(E_PROTOCOL, "the model takes no named values")
    p["skip_metadata"] = bool(flags & 0x02)
    p["page_size"] = r.int() if flags & 0x04 else 0
    p["paging_state"] = r.bytes() if flags & 0x08 else None
    p["serial"] = r.short() if flags & 0x10 else None
    p["timestamp"] = r.long() if flags & 0x20 else None
    return p


def shown_values(st, values, store, session):
    try:
        resolve_markers(store, st, session.keyspace)
        specs = st["markers"]
    except CqlError:
        specs = [None] * len(values)
    out = []
    for i, v in enumerate(values):
        spec = specs[i] if i < len(specs) else None
        if v is UNSET or v is None or spec is None:
            out.append(show("blob", v))
            continue
        try:
            out.append(show(spec[1], decode(spec[1], v, spec[0])))
        except CqlError:
            out.append({"hex": bytes(v).hex()})
    return out


FAULT_CODES = {
    "OVERLOADED": (E_OVERLOADED, "Server is in overloaded state. Cannot accept more requests "
                                 "at this point", lambda cl: b""),
    "UNAVAILABLE": (E_UNAVAILABLE, "Cannot achieve consistency level",
                    lambda cl: w_short(cl) + w_int(2) + w_int(1)),
    "WRITE_TIMEOUT": (E_WRITE_TIMEOUT, "Operation timed out - received only 1 responses.",
                      lambda cl: w_short(cl) + w_int(1) + w_int(2) + w_string("SIMPLE")),
    "READ_TIMEOUT": (E_READ_TIMEOUT, "Operation timed out - received only 1 responses.",
                     lambda cl: w_short(cl) + w_int(1) + w_int(2) + b"\x00"),
    "SERVER_ERROR": (E_SERVER, "java.lang.RuntimeException: injected", lambda cl: b""),
    "UNAUTHORIZED": (E_UNAUTHORIZED, "User has no CREATE permission on <all keyspaces> or "
                                     "any of its parents", lambda cl: b""),
    "INVALID": (E_INVALID, "injected", lambda cl: b""),
}


class Session:
    def __init__(self):
        self.keyspace = None
        self.started = False
        self.authenticated = False


class Server:
    def __init__(self, args):
        self.args = args
        self.store = Store(args.dc)
        self.log_lock = threading.Lock()
        self.log_path = args.log
        self.auth = args.user is not None

    def log(self, entry):
        with self.log_lock:
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")

    def race(self, session, cql):
        """Runs a statement set up with `race` before this request, as another
        client would have, between the store's read and its write."""
        with self.store.lock:
            for r in self.store.races:
                if r[0] > 0 and any(r[1] in c for c in cql):
                    r[0] -= 1
                    execute(self.store, Session(), parse(r[2]), [])
                    return

    def injected(self, cql, consistency):
        """An injected error for this request, or None."""
        with self.store.lock:
            for f in self.store.faults:
                if f[1] > 0 and (not f[2] or any(f[2] in c for c in cql)):
                    f[1] -= 1
                    code, msg, extra = FAULT_CODES[f[0]]
                    return CqlError(code, msg, extra(consistency))
        return None

    def handle(self, session, opcode, body):
        """One request: returns (opcode, body) of the answer."""
        r = Reader(body)
        if opcode == OP_OPTIONS:
            return OP_SUPPORTED, w_short(2) + w_string("CQL_VERSION") + w_short(1) + \
                w_string("3.4.5") + w_string("COMPRESSION") + w_short(0)
        if opcode == OP_STARTUP:
            opts = r.string_map()
            if "CQL_VERSION" not in opts:
                raise CqlError(E_PROTOCOL, "Missing value CQL_VERSION in STARTUP message")
            if opts.get("COMPRESSION"):
                raise CqlError(E_PROTOCOL, "Unknown compression algorithm: %s"
                               % opts["COMPRESSION"])
            session.started = True
            if self.auth:
                return OP_AUTHENTICATE, w_string(
                    "org.apache.cassandra.auth.PasswordAuthenticator")
            session.authenticated = True
            return OP_READY, b""
        if opcode == OP_AUTH_RESPONSE:
            if not session.started or not self.auth:
                raise CqlError(E_PROTOCOL, "Unexpected AUTH_RESPONSE")
            token = r.bytes() or b""
            parts = token.split(b"\0")
            if len(parts) != 3:
                raise CqlError(E_PROTOCOL, "Password must not be null")
            if parts[1].decode("utf-8", "replace") != self.args.user or \
                    parts[2].decode("utf-8", "replace") != self.args.password:
                raise CqlError(E_BAD_CREDENTIALS, "Provided username %s and/or password are "
                                                  "incorrect" % parts[1].decode("utf-8",
                                                                                "replace"))
            session.authenticated = True
            return OP_AUTH_SUCCESS, w_bytes(None)
        if not session.started:
            raise CqlError(E_PROTOCOL, "Invalid request: the first request must be STARTUP "
                                       "or OPTIONS")
        if not session.authenticated:
            raise CqlError(E_PROTOCOL, "Unexpected message %d, expecting SASL_RESPONSE"
                           % opcode)
        if opcode == OP_REGISTER:
            return OP_READY, b""
        if opcode == OP_PREPARE:
            text = r.long_string()
            self.log({"op": "PREPARE", "cql": text})
            st = parse(text)
            pid = hashlib.md5(text.encode()).digest()
            with self.store.lock:
                body = prepared_result(self.store, st, session, pid)
                self.store.prepared[pid] = text
            return OP_RESULT, body
        if opcode in (OP_QUERY, OP_EXECUTE):
            if opcode == OP_QUERY:
                text = r.long_string()
            else:
                pid = r.short_bytes()
                with self.store.lock:
                    text = self.store.prepared.get(bytes(pid))
                if text is None:
                    raise CqlError(E_UNPREPARED, "Prepared query with ID %s not found"
                                   % bytes(pid).hex(), w_short_bytes(pid))
            p = read_params(r)
            st = parse(text)
            entry = {"op": OP_NAMES[opcode], "cql": text,
                     "values": shown_values(st, p["values"], self.store, session),
                     "consistency": CONSISTENCY.get(p["consistency"], p["consistency"])}
            if p["serial"] is not None:
                entry["serial"] = CONSISTENCY.get(p["serial"], p["serial"])
            if p["page_size"]:
                entry["page_size"] = p["page_size"]
            if p["paging_state"] is not None:
                entry["paging_state"] = True
            fault = self.injected([text], p["consistency"])
            if fault:
                entry["answer"] = "ERROR 0x%04x" % fault.code
            self.log(entry)
            if fault:
                raise fault
            self.race(session, [text])
            return OP_RESULT, self.run_one(session, st, text, p)
        if opcode == OP_BATCH:
            return OP_RESULT, self.run_batch(session, r)
        raise CqlError(E_PROTOCOL, "Unknown opcode %d" % opcode)

    def run_one(self, session, st, text, p):
        if st["kind"] in ("insert", "update", "delete") and p["consistency"] in (8, 9):
            raise invalid("SERIAL is not supported as conditional update commit consistency. "
                          "Use ANY if you mean \"make sure it is accepted but I don't care "
                          "how many replicas commit it for non-SERIAL reads\"")
        if p["serial"] is not None and p["serial"] not in (8, 9):
            raise invalid("Invalid serial consistency %s"
                          % CONSISTENCY.get(p["serial"], p["serial"]))
        token = hashlib.md5(text.encode()).hexdigest()[:12].encode()
        offset = 0
        if p["paging_state"] is not None:
            state = bytes(p["paging_state"])
            if not state.startswith(token + b":"):
                raise CqlError(E_PROTOCOL, "Invalid value for the paging state")
            offset = int(state.split(b":")[1])
        with self.store.lock:
            res = execute(self.store, session, st, p["values"])
        if res[0] == "rows":
            return encode_result(res, p["skip_metadata"], (p["page_size"], offset, token))
        return encode_result(res)

    def run_batch(self, session, r):
        btype = r.byte()
        if btype not in (0, 1):
            raise invalid("the model has no counter tables")
        items = []
        for _ in range(r.short()):
            kind = r.byte()
            if kind == 0:
                text = r.long_string()
            else:
                pid = bytes(r.short_bytes())
                with self.store.lock:
                    text = self.store.prepared.get(pid)
                if text is None:
                    raise CqlError(E_UNPREPARED, "Prepared query with ID %s not found"
                                   % pid.hex(), w_short_bytes(pid))
            values = [r.value() for _ in range(r.short())]
            items.append((kind, text, values))
        consistency = r.short()
        flags = r.byte()
        serial = r.short() if flags & 0x10 else None
        if flags & 0x20:
            r.long()
        if flags & 0x40:
            raise CqlError(E_PROTOCOL, "the model takes no named values")
        parsed = [parse(text) for _, text, _ in items]
        entry = {"op": "BATCH", "type": ["LOGGED", "UNLOGGED"][btype],
                 "statements": [{"cql": text, "prepared": kind == 1,
                                 "values": shown_values(st, values, self.store, session)}
                                for (kind, text, values), st in zip(items, parsed)],
                 "consistency": CONSISTENCY.get(consistency, consistency)}
        if serial is not None:
            entry["serial"] = CONSISTENCY.get(serial, serial)
        fault = self.injected([text for _, text, _ in items], consistency)
        if fault:
            entry["answer"] = "ERROR 0x%04x" % fault.code
        self.log(entry)
        if fault:
            raise fault
        for st in parsed:
            if st["kind"] not in ("insert", "update", "delete"):
                raise invalid("Invalid statement in batch: only UPDATE, INSERT and DELETE "
                              "statements are allowed.")
            if st["kind"] == "insert" and st["if_not_exists"] or \
                    st["kind"] == "update" and st["conds"] is not None:
                raise invalid("the model runs no conditional batch")
        with self.store.lock:
            # every statement is checked before any applies, as Cassandra does
            for st, (_, _, values) in zip(parsed, items):
                t = resolve_markers(self.store, st, session.keyspace)
                Bound(st, t, values)
            for st, (_, _, values) in zip(parsed, items):
                execute(self.store, session, st, values)
        return w_int(0x0001)


def error_body(e):
    return w_int(e.code) + w_string(e.message) + e.extra


class Handler(socketserver.BaseRequestHandler):
    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def handle(self):
        server = self.server.model
        session = Session()
        while True:
            head = self.recv_exact(9)
            if head is None:
                return
            version, flags, stream, opcode, length = struct.unpack(">BBhBi", head)
            if length < 0 or length > 256 * 1024 * 1024:
                return
            body = self.recv_exact(length) if length else b""
            if body is None:
                return
            try:
                if version != 0x04:
                    raise CqlError(E_PROTOCOL, "Invalid or unsupported protocol version (%d); "
                                               "supported versions are (4/v4)" % version)
                if flags & 0x01:
                    raise CqlError(E_PROTOCOL, "the model takes no compressed frames")
                if flags & 0x04:
                    raise CqlError(E_PROTOCOL, "the model takes no custom payload")
                op, answer = server.handle(session, opcode, body)
            except CqlError as e:
                op, answer = OP_ERROR, error_body(e)
            except (KeyError, IndexError, ValueError, struct.error) as e:
                op, answer = OP_ERROR, error_body(CqlError(E_SERVER, "model: %r" % (e,)))
            frame = struct.pack(">BBhBi", 0x84, 0, stream, op, len(answer)) + answer
            try:
                self.request.sendall(frame)
            except OSError:
                return
            if version != 0x04:
                return


class Control(socketserver.StreamRequestHandler):
    def handle(self):
        model = self.server.model
        for line in self.rfile:
            words = line.decode().split()
            try:
                reply = self.command(model, words)
            except Exception as e:  # a bad command answers, never stops the model
                reply = "error %s" % e
            self.wfile.write((reply + "\n").encode())
            self.wfile.flush()

    def command(self, model, words):
        store = model.store
        if not words:
            return "error empty"
        if words[0] == "ping":
            return "pong"
        if words[0] == "fail":
            if words[1] not in FAULT_CODES:
                return "error unknown error %s" % words[1]
            with store.lock:
                store.faults.append([words[1], int(words[2]), " ".join(words[3:])])
            return "ok"
        if words[0] == "faults":
            with store.lock:
                return str(sum(f[1] for f in store.faults))
        if words[0] == "exec":
            with store.lock:
                execute(store, Session(), parse(" ".join(words[1:])), [])
            return "ok"
        if words[0] == "race":
            with store.lock:
                store.races.append([int(words[1]), words[2], " ".join(words[3:])])
            return "ok"
        if words[0] in ("count", "dump"):
            ks, name = words[1].split(".")
            where = dict(w.split("=", 1) for w in words[2:])
            with store.lock:
                t = store.table((ks, name), None)
                rows = [r for k in list(t.partitions) for r in t.rows_of(k) if t.live(r)
                        and all(str(show(t.types[c], r.get(c))) == v for c, v in where.items())]
                if words[0] == "count":
                    return str(len(rows))
                return json.dumps([{c: show(t.types[c], r.get(c)) for c in t.star}
                                   for r in rows])
        if words[0] == "log":
            with model.log_lock:
                model.log_path = None if words[1] == "off" else words[1]
            return "ok"
        return "error unknown command"


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--log")
    ap.add_argument("--dc", default="dc1")
    args = ap.parse_args()
    # a parent that blocked them (a service waits for them with sigtimedwait)
    # must still be able to stop the model
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    if (args.user is None) != (args.password is None):
        ap.error("--user and --password go together")
    model = Server(args)
    cql = TCPServer((args.host, args.port), Handler)
    control = TCPServer((args.host, 0), Control)
    cql.model = control.model = model
    threading.Thread(target=control.serve_forever, daemon=True).start()
    ports = "%d %d\n" % (cql.server_address[1], control.server_address[1])
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(ports)
        import os
        os.rename(tmp, args.port_file)
    sys.stdout.write("cql model server on %s" % ports)
    sys.stdout.flush()
    try:
        cql.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
