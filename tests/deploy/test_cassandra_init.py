#!/usr/bin/env python3
"""test_cassandra_init.py - infra/compose/init-cassandra.sh run against a
stand-in for cqlsh (no Cassandra server can run here).

  test_cassandra_init.py

The stand-in (written into a temporary bin directory, first on PATH) keeps a
model of the server's roles in a JSON file: it refuses logins while "down",
checks each login's password, and executes the few statements the script
sends (ALTER/CREATE ROLE, GRANT, two SELECTs) with the superuser-only rules
Cassandra applies to them. Every command line it is given is logged, so the
tests can require that no statement carrying a password was on one. `sleep`
is stubbed out (the script's waits are bounded by its own clock), and so is
the image's docker-entrypoint.sh for --server.

What is checked: the first run replaces the superuser's default password and
makes query_api (login, not a superuser, CREATE ON ALL KEYSPACES); a second
run changes nothing and never tries the default; a new query_api password is
applied (rotation), and a superuser flag set by hand is taken away; a
password with a quote survives CQL quoting; an unknown superuser password
stops it with a message after CASSANDRA_INIT_TIMEOUT_S; an empty or default
CASSANDRA_SUPERUSER_PASSWORD is refused; --wait returns once query_api logs
in and keeps waiting before; --server turns authentication on in
cassandra.yaml and runs the entrypoint, and refuses a cassandra.yaml whose
keys it cannot set (Cassandra 5's nested layout).
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "infra", "compose", "init-cassandra.sh")

FAKE_CQLSH = r'''#!/usr/bin/env python3
import json, os, re, sys

state_path = os.environ["FAKE_CQL_STATE"]
state = json.load(open(state_path))
with open(os.environ["FAKE_CQL_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")

def save():
    json.dump(state, open(state_path, "w"))

args = sys.argv[1:]
user = password = execute = None
i = 0
while i < len(args):
    if args[i] in ("-u", "-p", "-e"):
        value = args[i + 1]
        if args[i] == "-u": user = value
        elif args[i] == "-p": password = value
        else: execute = value
        i += 2
    elif args[i].startswith("--"):
        i += 1
    else:
        sys.exit("fake cqlsh: unexpected argument %r" % args[i])

if state["down_for"] > 0:
    state["down_for"] -= 1
    save()
    sys.exit("Connection error: ('Unable to connect to any servers')")
role = state["roles"].get(user)
if role is None or role["password"] != password or not role["login"]:
    sys.exit("Connection error: AuthenticationFailed('Provided username %s and/or password "
             "are incorrect')" % user)
superuser = role["superuser"]

def statements(text):
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append(cur.strip()); cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out

def options(text):
    found = {}
    for key, value in re.findall(r"(\w+)\s*=\s*('(?:[^']|'')*'|\w+)", text):
        key = key.upper()
        if value.startswith("'"):
            found[key] = value[1:-1].replace("''", "'")
        else:
            found[key] = value.lower() == "true"
    return found

def fail(msg):
    save()
    sys.stderr.write("<stdin>: " + msg + "\n")
    sys.exit(2)

def run(stmt):
    m = re.fullmatch(r"SELECT release_version FROM system\.local", stmt)
    if m:
        print(" release_version\n-----------------\n           4.1.0\n\n(1 rows)")
        return
    m = re.fullmatch(r"SELECT is_superuser FROM system_auth\.roles WHERE role = '(\w+)'", stmt)
    if m:
        if not superuser:
            fail("Unauthorized: no SELECT permission on system_auth.roles")
        r = state["roles"].get(m.group(1))
        rows = [] if r is None else [str(r["superuser"])]
        print(" is_superuser\n--------------\n" + "".join("         %s\n" % v for v in rows))
        return
    m = re.fullmatch(r"(CREATE ROLE IF NOT EXISTS|ALTER ROLE) (\w+) WITH (.*)", stmt, re.S)
    if m:
        if not superuser:
            fail("Unauthorized: only superusers may create or alter roles")
        verb, name, opts = m.group(1), m.group(2), options(m.group(3))
        if verb.startswith("CREATE"):
            if name in state["roles"]:
                return
            state["roles"][name] = {"password": None, "login": False, "superuser": False}
        elif name not in state["roles"]:
            fail("InvalidRequest: %s doesn't exist" % name)
        r = state["roles"][name]
        if "PASSWORD" in opts: r["password"] = opts["PASSWORD"]
        if "LOGIN" in opts: r["login"] = opts["LOGIN"]
        if "SUPERUSER" in opts: r["superuser"] = opts["SUPERUSER"]
        return
    m = re.fullmatch(r"GRANT (.+) TO (\w+)", stmt)
    if m:
        if not superuser:
            fail("Unauthorized: no AUTHORIZE permission")
        grants = state["grants"].setdefault(m.group(2), [])
        if m.group(1) not in grants:
            grants.append(m.group(1))
        return
    fail("SyntaxException: the fake server does not know %r" % stmt)

text = execute if execute is not None else sys.stdin.read()
for stmt in statements(text):
    run(stmt)
save()
'''

FAKE_ENTRYPOINT = """#!/bin/sh
echo "entrypoint $*" >>"$FAKE_CQL_LOG"
"""

YAML_41 = textwrap.dedent("""\
    cluster_name: 'Test Cluster'
    # Authentication backend, implementing IAuthenticator
    authenticator: AllowAllAuthenticator
    # Authorization backend, implementing IAuthorizer
    authorizer: AllowAllAuthorizer
    role_manager: CassandraRoleManager
    """)
YAML_50 = textwrap.dedent("""\
    cluster_name: 'Test Cluster'
    authenticator:
      class_name : org.apache.cassandra.auth.AllowAllAuthenticator
    authorizer:
      class_name: AllowAllAuthorizer
    """)

SUPER = "9f86d081884c7d659a2feaa0c55ad015"
QUERY = "2c26b46b68ffc68ff99b453c1d304134"


class Env:
    """A temporary bin directory, the model's state and log."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.bin = os.path.join(tmp, "bin")
        os.makedirs(self.bin)
        for name, text in (("cqlsh", FAKE_CQLSH), ("sleep", "#!/bin/sh\n"),
                           ("docker-entrypoint.sh", FAKE_ENTRYPOINT)):
            path = os.path.join(self.bin, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, stat.S_IRWXU)
        self.state_path = os.path.join(tmp, "state.json")
        self.log_path = os.path.join(tmp, "argv.log")
        self.set_state({"down_for": 0, "grants": {},
                        "roles": {"cassandra": {"password": "cassandra", "login": True,
                                                "superuser": True}}})

    def set_state(self, state):
        with open(self.state_path, "w") as f:
            json.dump(state, f)

    def state(self):
        return json.load(open(self.state_path))

    def argv_log(self):
        if not os.path.exists(self.log_path):
            return []
        return [json.loads(line) for line in open(self.log_path) if line.startswith("[")]

    def clear_log(self):
        if os.path.exists(self.log_path):
            os.remove(self.log_path)

    def run(self, *args, timeout=60, **env):
        full = {"PATH": self.bin + os.pathsep + os.environ["PATH"],
                "FAKE_CQL_STATE": self.state_path, "FAKE_CQL_LOG": self.log_path,
                "CASSANDRA_SUPERUSER_PASSWORD": SUPER, "CASSANDRA_QUERY_API_PASSWORD": QUERY,
                "CASSANDRA_INIT_TIMEOUT_S": "3", "HOME": self.tmp}
        full.update(env)
        return subprocess.run(["bash", SCRIPT] + list(args), env=full, capture_output=True,
                              text=True, timeout=timeout, check=False)


FAILURES = []


def expect(cond, what, proc=None):
    if not cond:
        detail = ""
        if proc is not None:
            detail = "\n      exit %s\n      stdout: %s\n      stderr: %s" % (
                proc.returncode, proc.stdout.strip()[-600:], proc.stderr.strip()[-600:])
        FAILURES.append(what + detail)


def no_statement_on_argv(env, what):
    for argv in env.argv_log():
        for word in argv:
            if "PASSWORD" in word.upper() and "=" in word:
                FAILURES.append("%s: a statement with a password on cqlsh's command line: %r"
                                % (what, argv))
                return


def test_first_run_then_again(env):
    env.set_state(dict(env.state(), down_for=3))  # the server is still starting
    p = env.run()
    s = env.state()
    expect(p.returncode == 0, "first run: exit 0", p)
    expect(s["roles"]["cassandra"]["password"] == SUPER,
           "first run: the superuser's password is CASSANDRA_SUPERUSER_PASSWORD", p)
    q = s["roles"].get("query_api") or {}
    expect(q.get("password") == QUERY and q.get("login") is True and q.get("superuser") is False,
           "first run: query_api logs in with its password and is not a superuser (%r)" % q, p)
    expect(s["grants"].get("query_api") == ["CREATE ON ALL KEYSPACES"],
           "first run: query_api's grants are %r" % s["grants"].get("query_api"), p)
    no_statement_on_argv(env, "first run")

    env.clear_log()
    p = env.run()
    expect(p.returncode == 0, "second run: exit 0", p)
    expect(env.state() == s, "second run: the roles changed: %r" % env.state(), p)
    tried_default = [a for a in env.argv_log() if "-p" in a and a[a.index("-p") + 1] == "cassandra"]
    expect(not tried_default, "second run: tried the default password: %r" % tried_default, p)


def test_rotation_and_hand_made_superuser(env):
    p = env.run()
    expect(p.returncode == 0, "setup: exit 0", p)
    s = env.state()
    s["roles"]["query_api"]["superuser"] = True  # by hand
    env.set_state(s)
    p = env.run(CASSANDRA_QUERY_API_PASSWORD="new-" + QUERY)
    q = env.state()["roles"]["query_api"]
    expect(p.returncode == 0, "rotation: exit 0", p)
    expect(q["password"] == "new-" + QUERY, "rotation: query_api's password is the new one", p)
    expect(q["superuser"] is False, "rotation: query_api is no longer a superuser", p)


def test_quote_in_password(env):
    pw = "it's;a-pass'word"
    p = env.run(CASSANDRA_QUERY_API_PASSWORD=pw)
    expect(p.returncode == 0, "quote: exit 0", p)
    expect(env.state()["roles"]["query_api"]["password"] == pw,
           "quote: query_api's password is %r" % env.state()["roles"]["query_api"]["password"], p)


def test_unknown_superuser_password(env):
    s = env.state()
    s["roles"]["cassandra"]["password"] = "changed-by-hand"
    env.set_state(s)
    p = env.run(CASSANDRA_INIT_TIMEOUT_S="1")
    expect(p.returncode != 0 and "no login as cassandra" in p.stderr,
           "unknown superuser password: fails with a message", p)
    expect("query_api" not in env.state()["roles"], "unknown superuser password: made a role", p)


def test_refused_superuser_passwords(env):
    for value in ("", "cassandra"):
        p = env.run(CASSANDRA_SUPERUSER_PASSWORD=value)
        expect(p.returncode != 0 and "CASSANDRA_SUPERUSER_PASSWORD" in p.stderr,
               "CASSANDRA_SUPERUSER_PASSWORD=%r: refused" % value, p)
    expect(env.state()["roles"]["cassandra"]["password"] == "cassandra",
           "refused passwords: the superuser's password changed", None)


def test_wait(env):
    try:
        p = env.run("--wait", timeout=3)
        expect(False, "--wait without the role: returned (exit %d)" % p.returncode, p)
    except subprocess.TimeoutExpired:
        pass
    p = env.run()
    expect(p.returncode == 0, "--wait setup: exit 0", p)
    p = env.run("--wait", timeout=30)
    expect(p.returncode == 0 and "query_api logs in" in p.stdout, "--wait with the role: exit 0", p)


def test_server(env):
    conf = os.path.join(env.tmp, "conf")
    os.makedirs(conf)
    yaml = os.path.join(conf, "cassandra.yaml")
    with open(yaml, "w") as f:
        f.write(YAML_41)
    p = env.run("--server", CASSANDRA_CONF=conf)
    text = open(yaml).read()
    expect(p.returncode == 0, "--server: exit 0", p)
    expect("\nauthenticator: PasswordAuthenticator\n" in text and
           "\nauthorizer: CassandraAuthorizer\n" in text and
           "role_manager: CassandraRoleManager" in text and "cluster_name" in text,
           "--server: cassandra.yaml is\n%s" % text, p)
    expect(open(env.log_path).read().strip().endswith("entrypoint cassandra -f"),
           "--server: the image's entrypoint did not run with cassandra -f", p)

    env.clear_log()
    with open(yaml, "w") as f:
        f.write(YAML_50)
    p = env.run("--server", CASSANDRA_CONF=conf)
    expect(p.returncode != 0 and "PasswordAuthenticator" in p.stderr,
           "--server on another cassandra.yaml layout: must stop", p)
    expect(not os.path.exists(env.log_path), "--server on another layout: the server started", p)


TESTS = [test_first_run_then_again, test_rotation_and_hand_made_superuser, test_quote_in_password,
         test_unknown_superuser_password, test_refused_superuser_passwords, test_wait, test_server]


def main():
    for test in TESTS:
        before = len(FAILURES)
        tmp = tempfile.mkdtemp(prefix="deta-cassandra-init-")
        try:
            test(Env(tmp))
        finally:
            shutil.rmtree(tmp)
        print("%s %s" % ("ok  " if len(FAILURES) == before else "FAIL", test.__name__))
    for f in FAILURES:
        print("  - " + f)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
