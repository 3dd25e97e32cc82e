"""deploylib.py - what the deployment checks share: where things are, the
seed's tables, the services and the settings their code reads.

Design: the checks (check_compose.py, check_k8s.py, check_dockerfile.py)
compare the deployment files with their sources of truth, never with a copy
written into the test:
  - the seed (../shared/seeds/infrastructure-services.md, relative to the
    repository root), parsed table by table: images, ports, listeners, topics,
    databases, volumes, health checks. When the repository is checked out
    without ../shared (a CI machine), seed-snapshot.md next to this file is
    used instead; when both exist they must be identical, so the snapshot
    cannot drift from the seed unnoticed;
  - services/services.tsv, the one table of the five services, their ports
    and databases (the services, the scripts and these checks all read it);
  - the C sources for the environment variables each service reads
    (deta_config_str/int, the library's config helpers, getenv): the
    library's (lib/src, and the list in lib/include/deta/config.h), which
    every service reads, and the service's own (services/<name>: its
    settings.c), which that service alone reads;
  - infra/compose/init-cassandra.sh for the Cassandra roles (the one who
    makes them is the one who says which exist, with which password and
    grants), and the seed's Cassandra section for the keyspace, datacenter
    and replication query-api must be given.
Each check is a function of a root directory returning a list of problems, so
test_mutations.py can run it on a broken copy and see it fail.
"""

import os
import re
import shlex
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - reported, not hidden
    sys.stderr.write("deploy tests need PyYAML: apt-get install python3-yaml "
                     "(scripts/deps.sh installs it)\n")
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SEED_REL = os.path.join("..", "shared", "seeds", "infrastructure-services.md")
SNAPSHOT = os.path.join(HERE, "seed-snapshot.md")

VAR_RE = r"[A-Z][A-Z0-9_]*"

# The seed: "Used by the payment service" (Redis), docs/contracts.md: payment-service owns Redis.
REDIS_USERS = {"payment-service"}


# ---- the seed ------------------------------------------------------------

def read_seed(repo=REPO):
    """The seed's text: the real one when present (and then the snapshot must
    equal it), else the snapshot. Returns (text, problems)."""
    real = os.path.normpath(os.path.join(repo, SEED_REL))
    problems = []
    if os.path.exists(real):
        text = open(real, encoding="utf-8").read()
        if not os.path.exists(SNAPSHOT) or open(SNAPSHOT, encoding="utf-8").read() != text:
            problems.append("tests/deploy/seed-snapshot.md differs from %s: copy the seed "
                            "over it" % real)
        return text, problems
    return open(SNAPSHOT, encoding="utf-8").read(), problems


def _cells(line):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return [c.replace("**", "").replace("`", "").strip() for c in cells]


def md_tables(text):
    """{heading: [table, ...]}, a table being a list of {column: cell}; cells
    lose their ** and backticks."""
    tables = {}
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            heading = m.group(1).strip()
        elif (line.lstrip().startswith("|") and i + 1 < len(lines)
              and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1])):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]))))
                i += 1
            tables.setdefault(heading, []).append(rows)
            continue
        i += 1
    return tables


def duration_s(text):
    """'10s', '1m30s', '500ms', 30 -> seconds (float)."""
    if isinstance(text, (int, float)):
        return float(text)
    total, rest = 0.0, str(text).strip()
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", rest):
        total += float(num) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|us|h|m|s))+", rest):
        raise ValueError("not a duration: %r" % text)
    return total


class Seed:
    """The seed's tables, keyed by the lower-case service name (zookeeper,
    kafka, postgres, cassandra, redis)."""

    def __init__(self, text):
        t = md_tables(text)
        self.text = text
        self.images, self.ports = {}, {}
        for row in t["Services"][0]:
            name = row["Service"].lower()
            self.images[name] = row["Image"]
            self.ports[name] = [int(p) for p in re.findall(r"\d+", row["Port"])]
        # Kafka: "9092 (host), 29092 (Docker internal)"
        self.kafka_host_port, self.kafka_internal_port = self.ports["kafka"][:2]
        self.listeners = {r["Listener"]: r["Address"] for r in t["Listener Configuration"][0]}
        self.topics = [r["Topic"] for r in t["Topics"][0]] + \
                      [r["DLQ Topic"] for r in t["Topics"][1]]
        self.databases = {r["Database"]: r["Service"] for r in t["Postgres"][0]}
        self.volumes = {r["Volume"]: (r["Service"].lower(), r["Path in Container"])
                        for r in t["Data Persistence"][0]}
        self.health = {}
        for r in t["Health Checks"][0]:
            self.health[r["Service"].lower()] = (r["Check"], duration_s(r["Interval"]))
        self.auto_create = re.search(r"KAFKA_AUTO_CREATE_TOPICS_ENABLE:\s*(\w+)", text).group(1)
        # "## Cassandra": "Used exclusively by the query-api service ...",
        # "**Keyspace:** `delivery_query`", "**Datacenter:** `dc1` (SimpleStrategy,
        # replication factor 1 for local dev)".
        section = re.search(r"^## Cassandra\s*$(.*?)(?=^## )", text, re.S | re.M).group(1)
        self.cassandra_users = set(re.findall(r"[Uu]sed exclusively by the ([\w-]+) service",
                                              section))
        self.cassandra_keyspace = re.search(r"Keyspace:\*\*\s*`(\w+)`", section).group(1)
        m = re.search(r"Datacenter:\*\*\s*`(\w+)`\s*\((\w+), replication factor (\d+)", section)
        self.cassandra_dc, self.cassandra_class, self.cassandra_rf = m.groups()

    def health_matches(self, service, argv):
        """True when argv (a probe command) is the seed's check for service;
        a shell's command string (compose's CMD-SHELL, sh/bash -c) is looked
        into word by word."""
        check, _ = self.health[service]
        joined = " ".join(argv)
        m = re.match(r"TCP connect on port (\d+)", check)
        if m:
            port = m.group(1)
            return port in joined and ("/dev/tcp/" in joined or "nc -z" in joined)
        want = shlex.split(check)
        words = without_login_options(shell_words(argv))
        return any(words[i:i + len(want)] == want for i in range(len(words)))


def without_login_options(words):
    """words without redis-cli's ACL login options (--user NAME,
    --no-auth-warning; the password comes from REDISCLI_AUTH): the seed's
    `redis-cli ping`, run as a user of redis-users.sh, is still that check."""
    out, skip = [], False
    for i, w in enumerate(words):
        if skip:
            skip = False
        elif w == "--user" and "redis-cli" in words[:i]:
            skip = True
        elif w != "--no-auth-warning":
            out.append(w)
    return out


def shell_words(argv):
    """argv, or the words of the shell command it runs: [STRING] (compose's
    CMD-SHELL without its tag) or [sh|bash, -c, STRING]. Operators (||, >,
    ;) are words of their own."""
    if len(argv) == 1:
        string = argv[0]
    elif len(argv) == 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        string = argv[2]
    else:
        return list(argv)
    lex = shlex.shlex(string, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        return list(lex)
    except ValueError:  # unbalanced quotes: not a command the seed's check is in
        return [string]


def load_seed(repo=REPO):
    text, problems = read_seed(repo)
    return Seed(text), problems


# ---- the services and what they read --------------------------------------

SERVICES_TSV = os.path.join("services", "services.tsv")


def services(repo=REPO):
    """{name: (port, database)} from services/services.tsv: lines of
    service<TAB>port<TAB>database, '#' starting a comment line."""
    found = {}
    with open(os.path.join(repo, SERVICES_TSV), encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.rstrip("\n").split("\t")
            if len(cells) != 3 or not re.fullmatch(r"[a-z][a-z-]*", cells[0]) or \
                    not re.fullmatch(r"[1-9]\d*", cells[1]) or \
                    not re.fullmatch(r"[a-z_]+", cells[2]):
                raise AssertionError("%s: %r is not service<TAB>port<TAB>database"
                                     % (SERVICES_TSV, line))
            found[cells[0]] = (int(cells[1]), cells[2])
    if len(found) != 5:
        raise AssertionError("expected five services in %s, found %r" % (SERVICES_TSV, found))
    return found


def _resolve(arg, text, defines):
    """The variable names a call's first argument stands for: a literal; an
    identifier bound to a literal (#define X "NAME", char x[] = "NAME");
    a struct field or array element (s->name), which stands for every
    {"NAME", ...} table entry of the file. None when it cannot tell."""
    m = re.fullmatch(r'"(' + VAR_RE + r')"', arg)
    if m:
        return {m.group(1)}
    if re.fullmatch(r"[A-Za-z_]\w*", arg):
        if arg in defines:
            return {defines[arg]}
        m = re.search(r"\b" + arg + r'\s*(?:\[\s*\])?\s*=\s*"(' + VAR_RE + r')"', text)
        return {m.group(1)} if m else None
    if re.fullmatch(r"[A-Za-z_]\w*(?:->|\.)\w+|[A-Za-z_]\w*\[[^]]+\](?:\.\w+)?", arg):
        # only NAME_LIKE_THIS: a table of routes ({"GET", ...}) is not settings
        found = {n for n in re.findall(r'\{\s*"(' + VAR_RE + r')"\s*,', text) if "_" in n}
        return found or None
    return None


# The functions that read one environment variable, named by their first argument.
READERS = ("deta_config_str", "deta_config_int", "config_copy", "config_int", "getenv",
           "secure_getenv", "deta_config_secret")
# A function's definition: its name and its parameter list, then its body's "{".
FUNC_HEAD = re.compile(r"^[A-Za-z_][\w \t*]*?\b(\w+)\s*\(([^;{}()]*)\)\s*\{", re.M)


def _call_args(text, start):
    """The arguments of the call whose "(" is at text[start], split at its
    top-level commas (strings and nested parentheses kept whole)."""
    args, depth, cur, i, quote = [], 0, "", start + 1, None
    while i < len(text):
        ch = text[i]
        if quote:
            cur += ch
            if ch == "\\":
                cur += text[i + 1:i + 2]
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            cur += ch
        elif ch in "([{":
            depth += 1
            cur += ch
        elif ch in ")]}":
            if depth == 0:
                args.append(cur.strip())
                return args
            depth -= 1
            cur += ch
        elif ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    return args


def _calls(text, readers):
    """(position, reader, argument naming the variable) of each call to one
    of readers ({function: index of that argument})."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, readers)) + r")\s*\(")
    for m in pattern.finditer(text):
        head = FUNC_HEAD.match(text, text.rfind("\n", 0, m.start()) + 1)
        if head and head.start(1) == m.start():
            continue  # its definition, not a call
        args = _call_args(text, m.end() - 1)
        index = readers[m.group(1)]
        if index < len(args):
            yield m.start(), m.group(1), args[index]


def _enclosing(text, pos):
    """(name, [parameter names]) of the function defined around pos, or None."""
    head = None
    for m in FUNC_HEAD.finditer(text, 0, pos):
        head = m
    if head is None:
        return None
    params = [re.findall(r"(\w+)\s*(?:\[\s*\])?\s*$", p.strip()) for p in head.group(2).split(",")]
    return head.group(1), [p[0] if p else "" for p in params]


def _wrappers(texts):
    """{function: index}: the library's readers, and every function of texts
    that passes one of its parameters on to a reader as the variable's name
    (static const char *knob(const char *name) { ... deta_config_str(name, ...)
    }), to a fixpoint: a call to it with a literal reads that variable."""
    readers = {name: 0 for name in READERS}
    while True:
        added = False
        for text in texts.values():
            for pos, _, arg in _calls(text, readers):
                fn = _enclosing(text, pos)
                if fn and arg in fn[1] and fn[0] not in readers:
                    readers[fn[0]] = fn[1].index(arg)
                    added = True
        if not added:
            return readers


def _read_vars(paths, strict):
    """Variables read by the files; (names, problems). strict: an argument
    that cannot be resolved is a problem (a service's own code), else it is
    skipped (the library's pass-through wrappers in config.c). A parameter
    passed on by a wrapper (see _wrappers) is not resolved where it is passed:
    the wrapper's callers name the variables."""
    texts = {p: open(p, encoding="utf-8", errors="replace").read() for p in paths}
    defines = {}
    for text in texts.values():
        defines.update(re.findall(r'^\s*#\s*define\s+(\w+)\s+"(' + VAR_RE + r')"\s*$', text, re.M))
    readers = _wrappers(texts)
    found, problems = set(), []
    for path, text in texts.items():
        for pos, _, arg in _calls(text, readers):
            fn = _enclosing(text, pos)
            if fn and arg in fn[1] and readers.get(fn[0]) == fn[1].index(arg):
                continue
            names = _resolve(arg.strip(), text, defines)
            if names:
                found |= names
            elif strict:
                problems.append("%s: cannot tell which variable %r names: read settings "
                                "with a literal, a #define or a {\"NAME\", ...} table"
                                % (os.path.relpath(path, REPO), arg))
    return found, problems


def _sources(directory):
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith((".c", ".h")))


def config_h_vars(repo=REPO):
    """The variables listed in the comment at the top of deta/config.h."""
    text = open(os.path.join(repo, "lib", "include", "deta", "config.h"), encoding="utf-8").read()
    comment = text[text.index("/*"):text.index("*/")]
    found = set()
    for line in comment.splitlines():
        m = re.match(r"^\s*\*\s{3,}(\S.*)$", line)
        if not m:
            continue
        first = re.split(r"\s{2,}", m.group(1).strip())[0].split()
        if first and all(re.fullmatch(VAR_RE, w) for w in first):
            found.update(first)
    return found


def library_vars(repo=REPO):
    """What every service reads: the library's sources plus config.h's list."""
    found, _ = _read_vars(_sources(os.path.join(repo, "lib", "src")), strict=False)
    return found | config_h_vars(repo)


# Redis's credentials: only a service that uses Redis gets them (least privilege).
REDIS_AUTH_VARS = {"REDIS_USERNAME", "REDIS_PASSWORD"}


def service_vars(name, repo=REPO):
    """(every variable the named service reads, problems): the library's and
    its own sources' and headers' (its settings.c); Redis's credentials only
    for a service of REDIS_USERS."""
    own, problems = _read_vars(_sources(os.path.join(repo, "services", name)), strict=True)
    reads = library_vars(repo) | own
    if name not in REDIS_USERS:
        reads -= REDIS_AUTH_VARS
    # The operator token is for the services with operator routes only (a route
    # registered with DETA_HTTP_OPERATOR, deta/auth.h); the others are not given it.
    if not any("DETA_HTTP_OPERATOR" in open(p, encoding="utf-8", errors="replace").read()
               for p in _sources_deep(os.path.join(repo, "services", name))):
        reads.discard("OPERATOR_TOKEN")
    return reads, problems


def _sources_deep(directory):
    """Every .c and .h below directory, subdirectories included."""
    found = []
    for base, _, files in os.walk(directory):
        found += [os.path.join(base, f) for f in files if f.endswith((".c", ".h"))]
    return sorted(found)


# The web console (docs/console.md): where the image installs its files (CMake's
# console component under /usr, infra/docker/Dockerfile), and the services the page
# calls from query-api's origin, which must allow that origin (CORS).
CONSOLE_DIR = "/usr/share/delivery-eta/console"
CONSOLE_CALLED = {"order-service": "QUERY_CONSOLE_ORDER_URL",
                  "inventory-service": "QUERY_CONSOLE_INVENTORY_URL"}


def console_problems(name, env, services):
    """What a deployment must give the web console: query-api serves the image's
    files and names order-service and inventory-service at their published ports on
    localhost; those two allow query-api's origin (http://localhost:<its port>) in
    HTTP_CORS_ORIGINS; no service allows "*". env: {VAR: value}; services: the
    table of services.tsv."""
    problems = []
    p = problems.append
    origins = [o.strip() for o in str(env.get("HTTP_CORS_ORIGINS") or "").split(",") if o.strip()]
    if "*" in origins:
        p('%s: HTTP_CORS_ORIGINS allows "*" (the list must be explicit)' % name)
    if name == "query-api":
        if env.get("QUERY_CONSOLE_DIR") != CONSOLE_DIR:
            p("query-api: QUERY_CONSOLE_DIR is %r, want %r (where the image has the console)"
              % (env.get("QUERY_CONSOLE_DIR"), CONSOLE_DIR))
        for svc, var in sorted(CONSOLE_CALLED.items()):
            want = "http://localhost:%d" % services[svc][0]
            if env.get(var) != want:
                p("query-api: %s is %r, want %r (%s's published port)"
                  % (var, env.get(var), want, svc))
    elif name in CONSOLE_CALLED:
        want = "http://localhost:%d" % services["query-api"][0]
        if want not in origins:
            p("%s: HTTP_CORS_ORIGINS %r does not allow the console's origin %s"
              % (name, env.get("HTTP_CORS_ORIGINS"), want))
    return problems


def init_roles(repo=REPO):
    """{database: (role, password variable)} from init-roles.sh."""
    text = open(os.path.join(repo, "infra", "compose", "init-roles.sh"), encoding="utf-8").read()
    return {db: (role, var) for role, db, var in
            re.findall(r"^\s*deta_init_role\s+(\S+)\s+(\S+)\s+(\S+)\s*$", text, re.M)}


PG_HBA = os.path.join("infra", "compose", "pg_hba.conf")


def postgres_settings(words):
    """{name: value} of the `-c name=value` options of a postgres command line."""
    words = [str(w) for w in words]
    out = {}
    for i, w in enumerate(words):
        if w == "-c" and i + 1 < len(words) and "=" in words[i + 1]:
            name, value = words[i + 1].split("=", 1)
            out[name] = value
    return out


def postgres_settings_problems(where, settings, nroles):
    """What the outbox relays need of Postgres (logical decoding) and the bound
    on an abandoned slot, in a postgres command line's settings."""
    problems = []
    if settings.get("wal_level") != "logical":
        problems.append("%s: wal_level is %r, the relays need logical" %
                        (where, settings.get("wal_level")))
    for name, least in (("max_replication_slots", nroles), ("max_wal_senders", 2 * nroles)):
        value = settings.get(name, "")
        if not value.isdigit() or int(value) < least:
            problems.append("%s: %s is %r, want at least %d (a slot per service database, "
                            "two replication connections per service)" % (where, name, value, least))
    bound = settings.get("max_slot_wal_keep_size", "")
    if not re.fullmatch(r"[1-9][0-9]*(MB|GB)", bound):
        problems.append("%s: max_slot_wal_keep_size is %r: an abandoned slot would keep WAL "
                        "without bound (want a size such as 1GB)" % (where, bound))
    delay, siblings = settings.get("commit_delay", ""), settings.get("commit_siblings", "")
    if not (delay.isdigit() and 0 < int(delay) <= 10000 and siblings.isdigit()
            and int(siblings) >= 1):
        problems.append("%s: commit_delay is %r and commit_siblings %r: no group commit "
                        "(want a delay of 1 to 10000 us, and siblings >= 1; "
                        "infra/README.md#group-commit)" % (where, delay, siblings))
    if not settings.get("hba_file"):
        problems.append("%s: no hba_file (infra/compose/pg_hba.conf): the image's file lets "
                        "every role replicate the cluster from localhost" % where)
    return problems


def hba_problems(text, superuser="postgres"):
    """An hba file's lines that give physical replication (a `replication`
    database) to anyone but the superuser, or take a connection without a
    password from the network."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        kind = words[0]
        if kind == "local" and len(words) >= 4:
            dbs, users, method = words[1], words[2], words[3]
        elif kind.startswith("host") and len(words) >= 5:
            dbs, users, method = words[1], words[2], words[4]
        else:
            problems.append("pg_hba.conf:%d: cannot read %r" % (n, line))
            continue
        if "replication" in dbs.split(",") and users != superuser:
            problems.append("pg_hba.conf:%d: physical replication for %s, not only the "
                            "superuser %s" % (n, users, superuser))
        if kind.startswith("host") and method in ("trust", "password"):
            problems.append("pg_hba.conf:%d: %s over TCP" % (n, method))
    return problems


CASSANDRA_INIT = os.path.join("infra", "compose", "init-cassandra.sh")
# The consistency levels a query-api setting may name (CQL v4 spec, section 3).
CQL_CONSISTENCIES = {"ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM",
                     "EACH_QUORUM", "LOCAL_ONE"}
CQL_SERIAL_CONSISTENCIES = {"SERIAL", "LOCAL_SERIAL"}


class CassandraInit:
    """What init-cassandra.sh does, read from its text: the roles it makes
    (`init_role ROLE PASSWORD_VAR` lines), their grants (`grant ROLE ADMIN
    PERMISSION ON RESOURCE` lines), and the problems of the text itself:
    authentication off, the superuser's default password kept, a service role
    that could be a superuser, a password written in the text."""

    def __init__(self, repo=REPO):
        path = os.path.join(repo, CASSANDRA_INIT)
        self.text = open(path, encoding="utf-8").read()
        text = self.text
        self.roles = dict(re.findall(r"^\s*init_role\s+(\w+)\s+(\w+)\b", text, re.M))
        self.grants = {}
        for role, what in re.findall(r"^\s*grant\s+(\w+)\s+\S+\s+(.+?)\s*$", text, re.M):
            self.grants.setdefault(role, []).append(" ".join(what.upper().split()))
        self.problems = []
        p = self.problems.append
        # The commands, not the comments that talk about them.
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for setting in ("authenticator: PasswordAuthenticator", "authorizer: CassandraAuthorizer"):
            if setting not in code:
                p("init-cassandra.sh does not set %r in cassandra.yaml" % setting)
        # The superuser: cassandra, named directly or through SUPERUSER=cassandra.
        superuser = re.escape("cassandra") + r"|\$\{?SUPERUSER\}?" \
            if re.search(r"^SUPERUSER=cassandra$", code, re.M) else re.escape("cassandra")
        if not re.search(r"ALTER\s+ROLE\s+(?:%s)\s+WITH\s+PASSWORD\b" % superuser, code, re.I) or \
                "CASSANDRA_SUPERUSER_PASSWORD" not in code:
            p("init-cassandra.sh does not replace the superuser's default password with "
              "CASSANDRA_SUPERUSER_PASSWORD")
        if not self.roles:
            p("init-cassandra.sh makes no role (init_role ROLE PASSWORD_VAR)")
        for stmt in re.findall(r"\b(?:CREATE|ALTER)\s+ROLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+WITH\b[^;]*;",
                               code, re.I):
            if re.search(r"SUPERUSER\s*=\s*true", stmt, re.I):
                p("init-cassandra.sh: %r makes a superuser" % stmt.strip())
            elif re.search(r"\bCREATE\b", stmt, re.I) and \
                    not re.search(r"SUPERUSER\s*=\s*false", stmt, re.I):
                p("init-cassandra.sh: %r does not say SUPERUSER = false" % stmt.strip())
            if re.search(r"\bCREATE\b", stmt, re.I) and \
                    not re.search(r"LOGIN\s*=\s*true", stmt, re.I):
                p("init-cassandra.sh: %r makes a role that cannot log in" % stmt.strip())
        for value in re.findall(r"PASSWORD\s*=\s*'([^']*)'", code, re.I):
            if not value.startswith("$"):
                p("init-cassandra.sh: a literal password (PASSWORD = '%s'); take it from the "
                  "environment" % value)
        for role, grants in self.grants.items():
            for g in grants:
                if "ROLE" in g or "AUTHORIZE" in g or "DESCRIBE" in g:
                    p("init-cassandra.sh: role %s is granted %s (roles are the superuser's)"
                      % (role, g))
                elif g.endswith("ON ALL KEYSPACES") and g != "CREATE ON ALL KEYSPACES":
                    p("init-cassandra.sh: role %s is granted %s: every keyspace, not its own"
                      % (role, g))

    def can_create_keyspace(self, role, keyspace):
        """True when role may run CREATE KEYSPACE (Cassandra asks for CREATE
        on all keyspaces, IF NOT EXISTS or not) or its keyspace is made for it."""
        grants = self.grants.get(role, [])
        return any(g in ("CREATE ON ALL KEYSPACES", "ALL PERMISSIONS ON ALL KEYSPACES",
                         "ALL ON ALL KEYSPACES") or
                   g.endswith("ON KEYSPACE " + keyspace.upper()) for g in grants)


def contact_points(value, default_port):
    """[(host, port)] of CASSANDRA_CONTACT_POINTS (host[:port],...)."""
    out = []
    for item in str(value or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if re.search(r":\d+$", item) else (item, "", "")
        out.append((host, int(port) if port else default_port))
    return out


def query_store_problems(where, env, password_var, seed, init, server_dc):
    """What a deployment gives a Cassandra user of the seed (query-api) to
    reach the seed's Cassandra. env: {VAR: value} (None when not a literal);
    password_var: the secrets-file variable CASSANDRA_PASSWORD comes from
    (None when from none); init: CassandraInit; server_dc: the Cassandra
    server's CASSANDRA_DC."""
    problems = []
    p = problems.append
    want = {"QUERY_STORE": "cassandra", "CASSANDRA_KEYSPACE": seed.cassandra_keyspace,
            "CASSANDRA_LOCAL_DC": seed.cassandra_dc,
            "CASSANDRA_REPLICATION_CLASS": seed.cassandra_class,
            "CASSANDRA_REPLICATION_FACTOR": seed.cassandra_rf}
    for var, value in want.items():
        if env.get(var) != value:
            p("%s: %s is %r, want %r (the seed's Cassandra)" % (where, var, env.get(var), value))
    if server_dc != seed.cassandra_dc:
        p("cassandra: CASSANDRA_DC is %r, the seed's datacenter is %r" % (server_dc,
                                                                         seed.cassandra_dc))
    port = seed.ports["cassandra"][0]
    try:
        default_port = int(env.get("CASSANDRA_PORT") or port)
    except ValueError:
        default_port = None
        p("%s: CASSANDRA_PORT is %r, not a port" % (where, env.get("CASSANDRA_PORT")))
    points = contact_points(env.get("CASSANDRA_CONTACT_POINTS"), default_port)
    if not points or any(pt != ("cassandra", port) for pt in points):
        p("%s: CASSANDRA_CONTACT_POINTS %r (port %r) is not the seed's Cassandra, cassandra:%d"
          % (where, env.get("CASSANDRA_CONTACT_POINTS"), env.get("CASSANDRA_PORT"), port))
    user = env.get("CASSANDRA_USERNAME")
    if user not in init.roles:
        p("%s: CASSANDRA_USERNAME is %r, not a role init-cassandra.sh makes (%s)"
          % (where, user, ", ".join(sorted(init.roles)) or "none"))
    elif password_var != init.roles[user]:
        p("%s: CASSANDRA_PASSWORD must be the secrets file's %s (the password of %s), is from %r"
          % (where, init.roles[user], user, password_var))
    elif not init.can_create_keyspace(user, seed.cassandra_keyspace):
        p("%s: role %s cannot create its keyspace %s (init-cassandra.sh grants %r)"
          % (where, user, seed.cassandra_keyspace, init.grants.get(user, [])))
    for var in ("CASSANDRA_READ_CONSISTENCY", "CASSANDRA_WRITE_CONSISTENCY"):
        if var in env and env[var] not in CQL_CONSISTENCIES:
            p("%s: %s is %r, not a consistency level" % (where, var, env[var]))
    if "CASSANDRA_SERIAL_CONSISTENCY" in env and \
            env["CASSANDRA_SERIAL_CONSISTENCY"] not in CQL_SERIAL_CONSISTENCIES:
        p("%s: CASSANDRA_SERIAL_CONSISTENCY is %r, not SERIAL or LOCAL_SERIAL"
          % (where, env["CASSANDRA_SERIAL_CONSISTENCY"]))
    return problems


def probe_logs_in(argv, password_var):
    """True when a cqlsh probe logs in with -u and -p $password_var (the
    server has PasswordAuthenticator on: without a login it never answers)."""
    words = shell_words(argv)
    return "-u" in words and any(
        words[i] == "-p" and words[i + 1].lstrip("$").strip("{}") == password_var
        for i in range(len(words) - 1))


def created_databases(sql_text):
    return set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", sql_text, re.I))


def topics_in_script(text):
    m = re.search(r"TOPICS=\((.*?)\)", text, re.S)
    return m.group(1).split() if m else []


TOPICS_HEADER = "lib/include/deta/topics.h"


def repo_topics(root, seed, problems):
    """The system's topics as TOPICS_HEADER defines them (its DETA_TOPIC_*
    names, raw. and dlq.): the seed's eight and the repository's own (a
    problem when one of the seed's is missing)."""
    with open(os.path.join(root, TOPICS_HEADER), encoding="utf-8") as f:
        topics = re.findall(r'#define DETA_TOPIC_\w+ "((?:raw|dlq)\.[^"]+)"', f.read())
    for t in seed.topics:
        if t not in topics:
            problems.append("%s does not define the seed's topic %s" % (TOPICS_HEADER, t))
    return topics


# ---- YAML and reporting -----------------------------------------------------

def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def is_password_name(name):
    """A credential: a password, a secret or a token (OPERATOR_TOKEN).
    Such a value never has a literal or a default in a deployment file."""
    upper = name.upper()
    return "PASSWORD" in upper or "SECRET" in upper or "TOKEN" in upper


# The credentials of an optional transport (Kafka's SASL and a client key's
# passphrase): a service refuses them while KAFKA_SECURITY_PROTOCOL does not use
# them (lib/src/config_kafka.c), so a deployment file passes them without a
# default (compose: ${VAR?...}) but may leave them empty, and an example file's
# placeholder for them is empty rather than change-me.
OPTIONAL_CREDENTIALS = ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD")
OPTIONAL_CREDENTIAL_KEY = re.compile(r"[A-Z]+_KAFKA_(?:PASSWORD|SSL_KEY_PASSWORD)")


def is_optional_credential_key(key):
    """A key of .env.example or secrets.env.example that holds one of them."""
    return OPTIONAL_CREDENTIAL_KEY.fullmatch(key) is not None


def report(name, problems):
    """Prints the problems (or OK) and returns the exit status."""
    if problems:
        print("%s: %d problem(s):" % (name, len(problems)))
        for p in problems:
            print("  - " + p)
        return 1
    print("%s: OK" % name)
    return 0


def run_check(name, check, argv):
    """main() of a check script: the root is argv[1] or the repository."""
    root = os.path.abspath(argv[1]) if len(argv) > 1 else REPO
    try:
        problems = check(root)
    except Exception as e:  # a file that does not even parse is a problem too
        problems = ["%s: %s" % (type(e).__name__, e)]
    return report(name, problems)
