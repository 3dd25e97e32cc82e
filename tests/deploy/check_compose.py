#!/usr/bin/env python3
"""check_compose.py - infra/compose against the seed, field by field.

  check_compose.py [root]     (root: a repository tree; default: this one)

Checks, each against its source of truth (deploylib.py):
  - the seed's five infrastructure services with exactly its images, ports,
    named volumes and paths, health checks (command and interval), Kafka's two
    listeners and ZooKeeper dependency, auto-creation as the seed has it, and
    no dependency for the others ("all others start independently");
  - init-postgres.sql (mounted into /docker-entrypoint-initdb.d) creates every
    database of the seed and of the five services; init-roles.sh gives each
    service's database a role, and that role and password are the service's;
  - kafka-init creates exactly the system's topics (the seed's eight and
    raw.eta-events with its twin, as lib/include/deta/topics.h has them),
    after a healthy Kafka;
  - Cassandra with authentication (init-cassandra.sh --server) and a health
    check that logs in; cassandra-init, after a healthy Cassandra, runs
    init-cassandra.sh with the superuser's and every role's password; the
    script itself turns authentication on, replaces the superuser's default
    password, makes roles that are not superusers, writes no password (see
    deploylib.CassandraInit);
  - the seed's Cassandra user (query-api) runs with QUERY_STORE=cassandra and
    the seed's keyspace, datacenter and replication, logged in as a role of
    init-cassandra.sh with that role's password, after a healthy Cassandra and
    a finished cassandra-init;
  - the five services of lib/src/config.c: built from infra/docker/Dockerfile
    with their SERVICE and HTTP_PORT, port published, through kafka:29092,
    every variable their code reads set (and none it does not), no literal
    password (each is ${VAR:?...}, or ${VAR?...} for the Kafka credentials
    that may be empty, and listed in .env.example), each started
    after what it needs is healthy;
  - the web console: query-api serves the image's console files and names
    order-service and inventory-service at their published ports, and those two
    allow query-api's origin in HTTP_CORS_ORIGINS (deploylib.console_problems);
  - observability (docs/observability.md): prometheus and grafana at pinned
    versions, prometheus with infra/observability/prometheus mounted as its
    configuration (the file its --config.file names, whose rule files exist there),
    grafana with the provisioning and dashboards of infra/observability/grafana (its
    datasource reaching the prometheus service, its dashboard provider reading the
    dashboards' mount), after a healthy prometheus; each with a named volume of its
    own (the only named volumes beside the seed's), and no service waiting for them.
"""

import os
import re
import sys

import deploylib as dl

INFRA = ("zookeeper", "kafka", "postgres", "cassandra", "redis")
REQUIRED_VAR = re.compile(r"^\$\{(" + dl.VAR_RE + r"):\?[^}]*\}$")
# Set, maybe empty, no default: dl.OPTIONAL_CREDENTIALS only.
SET_VAR = re.compile(r"^\$\{(" + dl.VAR_RE + r")\?[^}]*\}$")


def env_dict(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def published_ports(svc):
    """[(host, container)] of a service's ports, short or long syntax."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((int(p.get("published", 0)), int(p["target"])))
            continue
        parts = str(p).split("/")[0].split(":")
        container = int(parts[-1])
        host = int(parts[-2]) if len(parts) >= 2 else 0
        out.append((host, container))
    return out


def healthcheck_argv(hc):
    test = hc.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(t) for t in test or []]


def depends(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {name: None for name in d}
    return {name: (v or {}).get("condition") for name, v in d.items()}


def check_redis_acl(c, problems):
    """Redis runs with the users of redis-users.sh (the default user off)."""
    r = (c.get("services") or {}).get("redis") or {}
    start = " ".join(str(w) for w in (r.get("entrypoint") or []) + (r.get("command") or []))
    if "redis-users.sh" not in start or "--aclfile" not in start:
        problems.append("redis: must start with the ACL file of redis-users.sh (--aclfile)")
    if not any(str(v).endswith("/redis-users.sh:ro") for v in r.get("volumes") or []):
        problems.append("redis: ./redis-users.sh is not mounted read-only")


def check_infra(c, seed, problems):
    check_redis_acl(c, problems)
    svcs = c.get("services") or {}
    for name in INFRA:
        s = svcs.get(name)
        if s is None:
            problems.append("service %s (seed) is missing" % name)
            continue
        if s.get("image") != seed.images[name]:
            problems.append("%s: image %r, the seed says %r" % (name, s.get("image"),
                                                                 seed.images[name]))
        want = seed.ports[name][0]
        if (want, want) not in published_ports(s):
            problems.append("%s: port %d is not published as %d:%d" % (name, want, want, want))
        hc = s.get("healthcheck")
        if not hc:
            problems.append("%s: no healthcheck (the seed has one)" % name)
        else:
            argv = healthcheck_argv(hc)
            if not seed.health_matches(name, argv[1:]):
                problems.append("%s: healthcheck %r is not the seed's %r" %
                                (name, argv, seed.health[name][0]))
            try:
                interval = dl.duration_s(hc.get("interval", "30s"))
            except ValueError as e:
                interval = None
                problems.append("%s: healthcheck interval: %s" % (name, e))
            if interval != seed.health[name][1]:
                problems.append("%s: healthcheck interval %r, the seed says %ss" %
                                (name, hc.get("interval"), int(seed.health[name][1])))
        deps = depends(s)
        if name == "kafka":
            if deps != {"zookeeper": "service_healthy"}:
                problems.append("kafka: must depend on zookeeper (service_healthy) only, has %r"
                                % deps)
        elif deps:
            problems.append("%s: depends on %r, the seed starts it independently" % (name, deps))


def listener_map(value):
    out = {}
    for item in str(value or "").split(","):
        m = re.match(r"^\s*(\w+)://([^,]*)$", item)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def check_kafka(c, seed, problems):
    env = env_dict((c.get("services") or {}).get("kafka") or {})
    adv = listener_map(env.get("KAFKA_ADVERTISED_LISTENERS"))
    if adv != seed.listeners:
        problems.append("kafka: advertised listeners %r, the seed says %r" % (adv, seed.listeners))
    bound = listener_map(env.get("KAFKA_LISTENERS"))
    for name, address in seed.listeners.items():
        port = address.rsplit(":", 1)[-1]
        if name not in bound or not bound[name].endswith(":" + port):
            problems.append("kafka: KAFKA_LISTENERS does not bind %s on port %s" % (name, port))
    protocols = dict(p.split(":", 1) for p in
                     str(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "")).split(",") if ":" in p)
    for name in seed.listeners:
        if name not in protocols:
            problems.append("kafka: no security protocol for listener %s" % name)
    if env.get("KAFKA_INTER_BROKER_LISTENER_NAME") != "PLAINTEXT":
        problems.append("kafka: the inter-broker listener must be the in-network PLAINTEXT")
    if env.get("KAFKA_ZOOKEEPER_CONNECT") != "zookeeper:%d" % seed.ports["zookeeper"][0]:
        problems.append("kafka: KAFKA_ZOOKEEPER_CONNECT is %r" % env.get("KAFKA_ZOOKEEPER_CONNECT"))
    if str(env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")).lower() != seed.auto_create:
        problems.append("kafka: KAFKA_AUTO_CREATE_TOPICS_ENABLE must be %s as in the seed"
                        % seed.auto_create)
    exposed = [str(p) for p in (c["services"]["kafka"].get("expose") or [])]
    if str(seed.kafka_internal_port) not in exposed:
        problems.append("kafka: the in-network port %d is not in expose" % seed.kafka_internal_port)


def mounts(svc):
    """[(source, target)] of a service's volumes, short or long syntax."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source")), str(v.get("target"))))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


# The observability services (docs/observability.md) and their named volumes.
OBSERVABILITY = {"prometheus": "prometheus_data", "grafana": "grafana_data"}
OBS_DIR = os.path.join("infra", "observability")


def check_volumes(c, seed, problems):
    declared = set((c.get("volumes") or {}).keys()) - set(OBSERVABILITY.values())
    if declared != set(seed.volumes):
        problems.append("named volumes %s, the seed has %s" % (sorted(declared), sorted(seed.volumes)))
    for vol, (service, path) in seed.volumes.items():
        svc = (c.get("services") or {}).get(service) or {}
        if (vol, path) not in mounts(svc):
            problems.append("%s: volume %s is not mounted at %s" % (service, vol, path))


def check_postgres_init(root, c, services, problems):
    compose_dir = os.path.join(root, "infra", "compose")
    pg = (c.get("services") or {}).get("postgres") or {}
    targets = {src: dst for src, dst in mounts(pg)}
    for f in ("init-postgres.sql", "init-roles.sh"):
        dst = targets.get("./" + f) or targets.get(f)
        if not dst or not dst.startswith("/docker-entrypoint-initdb.d/"):
            problems.append("postgres: %s is not mounted into /docker-entrypoint-initdb.d/" % f)
    order = [targets.get("./init-postgres.sql", ""), targets.get("./init-roles.sh", "")]
    if all(order) and sorted(order) != order:
        problems.append("postgres: init-roles.sh must run after init-postgres.sql (name order)")
    sql = open(os.path.join(compose_dir, "init-postgres.sql"), encoding="utf-8").read()
    created = dl.created_databases(sql)
    wanted = set(dl.load_seed(root)[0].databases) | {db for _, db in services.values()}
    for db in sorted(wanted - created):
        problems.append("init-postgres.sql does not create database %s" % db)
    roles = dl.init_roles(root)
    for db in sorted(wanted - set(roles)):
        problems.append("init-roles.sh gives database %s no role" % db)
    env = env_dict(pg)
    for _, var in roles.values():
        if var not in env:
            problems.append("postgres: %s (read by init-roles.sh) is not passed" % var)
    # Logical decoding for the outbox relays, the bound on a slot, our hba file.
    command = pg.get("command") or []
    if isinstance(command, str):
        command = command.split()
    if [str(w) for w in command[:1]] != ["postgres"]:
        problems.append("postgres: command %r does not start the server (postgres -c ...)" % command)
    settings = dl.postgres_settings(command)
    problems += dl.postgres_settings_problems("postgres", settings, len(roles))
    hba = settings.get("hba_file")
    if hba and targets.get("./pg_hba.conf") != hba:
        problems.append("postgres: ./pg_hba.conf is not mounted at hba_file %s" % hba)
    problems += dl.hba_problems(open(os.path.join(root, dl.PG_HBA), encoding="utf-8").read())


def check_topics(root, c, seed, problems):
    init = (c.get("services") or {}).get("kafka-init")
    if not init:
        problems.append("no kafka-init service to pre-create the topics")
        return
    if init.get("image") != seed.images["kafka"]:
        problems.append("kafka-init: image %r, want the broker's %r" % (init.get("image"),
                                                                         seed.images["kafka"]))
    if depends(init) != {"kafka": "service_healthy"}:
        problems.append("kafka-init: must depend on kafka (service_healthy), has %r" % depends(init))
    env = env_dict(init)
    if env.get("KAFKA_BOOTSTRAP_SERVERS") != seed.listeners["PLAINTEXT"]:
        problems.append("kafka-init: KAFKA_BOOTSTRAP_SERVERS must be %s" % seed.listeners["PLAINTEXT"])
    if not env.get("KAFKA_TOPIC_PARTITIONS"):
        problems.append("kafka-init: KAFKA_TOPIC_PARTITIONS is not set")
    script = open(os.path.join(root, "infra", "compose", "init-topics.sh"), encoding="utf-8").read()
    topics, want = dl.topics_in_script(script), dl.repo_topics(root, seed, problems)
    if sorted(topics) != sorted(want):
        problems.append("init-topics.sh creates %s, the system has %s (%s)"
                        % (topics, want, dl.TOPICS_HEADER))
    if "./init-topics.sh" not in dict(mounts(init)):
        problems.append("kafka-init: init-topics.sh is not mounted")


def command_of(svc):
    """entrypoint + command of a service, as one list of words."""
    out = []
    for key in ("entrypoint", "command"):
        value = svc.get(key)
        if isinstance(value, str):
            out += value.split()
        elif value:
            out += [str(v) for v in value]
    return out


def check_cassandra(root, c, seed, init, problems):
    svcs = c.get("services") or {}
    problems.extend(init.problems)
    server = svcs.get("cassandra") or {}
    cmd = command_of(server)
    if not any(w.endswith("init-cassandra.sh") for w in cmd) or "--server" not in cmd:
        problems.append("cassandra: must start through init-cassandra.sh --server "
                        "(authentication on), runs %r" % cmd)
    if "./init-cassandra.sh" not in dict(mounts(server)):
        problems.append("cassandra: init-cassandra.sh is not mounted")
    argv = healthcheck_argv(server.get("healthcheck") or {})
    if not dl.probe_logs_in(argv[1:], "CASSANDRA_SUPERUSER_PASSWORD"):
        problems.append("cassandra: the healthcheck must log in (-u, -p $CASSANDRA_SUPERUSER_"
                        "PASSWORD): with authentication on, cqlsh gets nothing without")
    init_svc = svcs.get("cassandra-init")
    if not init_svc:
        problems.append("no cassandra-init service to make the Cassandra roles")
        return
    if init_svc.get("image") != seed.images["cassandra"]:
        problems.append("cassandra-init: image %r, want Cassandra's %r (its cqlsh)"
                        % (init_svc.get("image"), seed.images["cassandra"]))
    if depends(init_svc) != {"cassandra": "service_healthy"}:
        problems.append("cassandra-init: must depend on cassandra (service_healthy), has %r"
                        % depends(init_svc))
    cmd = command_of(init_svc)
    if not any(w.endswith("init-cassandra.sh") for w in cmd) or \
            {"--server", "--wait"} & set(cmd):
        problems.append("cassandra-init: must run init-cassandra.sh (no option), runs %r" % cmd)
    if "./init-cassandra.sh" not in dict(mounts(init_svc)):
        problems.append("cassandra-init: init-cassandra.sh is not mounted")
    env = env_dict(init_svc)
    if env.get("CQLSH_HOST") != "cassandra" or \
            env.get("CQLSH_PORT", str(seed.ports["cassandra"][0])) != str(seed.ports["cassandra"][0]):
        problems.append("cassandra-init: CQLSH_HOST/CQLSH_PORT must be cassandra:%d, are %r:%r"
                        % (seed.ports["cassandra"][0], env.get("CQLSH_HOST"), env.get("CQLSH_PORT")))
    for var in ["CASSANDRA_SUPERUSER_PASSWORD"] + sorted(init.roles.values()):
        m = REQUIRED_VAR.match(env.get(var) or "")
        if not m or m.group(1) != var:
            problems.append("cassandra-init: %s (read by init-cassandra.sh) must be ${%s:?...}"
                            % (var, var))
    m = REQUIRED_VAR.match(env_dict(server).get("CASSANDRA_SUPERUSER_PASSWORD") or "")
    if not m or m.group(1) != "CASSANDRA_SUPERUSER_PASSWORD":
        problems.append("cassandra: CASSANDRA_SUPERUSER_PASSWORD (its healthcheck's) must be "
                        "${CASSANDRA_SUPERUSER_PASSWORD:?...}")
    for name in sorted(seed.cassandra_users):
        env = env_dict(svcs.get(name) or {})
        m = REQUIRED_VAR.match(env.get("CASSANDRA_PASSWORD") or "")
        problems.extend(dl.query_store_problems(
            name, env, m.group(1) if m else None, seed, init,
            env_dict(server).get("CASSANDRA_DC")))


def password_refs(c, problems):
    """Checks that every password-like value is ${VAR:?...}; returns the VARs."""
    refs = set()
    for name, svc in (c.get("services") or {}).items():
        for key, value in env_dict(svc).items():
            if not dl.is_password_name(key):
                continue
            m = REQUIRED_VAR.match(value or "")
            if not m and key in dl.OPTIONAL_CREDENTIALS:
                m = SET_VAR.match(value or "")
                if m and not dl.is_optional_credential_key(m.group(1)):
                    problems.append("%s: %s takes %s, which is no *_KAFKA_*PASSWORD key"
                                    % (name, key, m.group(1)))
            if not m:
                problems.append("%s: %s is %r: a literal or defaulted password; use ${VAR:?...}"
                                % (name, key, value))
            else:
                refs.add(m.group(1))
    return refs


def check_env_example(root, refs, problems):
    path = os.path.join(root, "infra", "compose", ".env.example")
    if not os.path.exists(path):
        problems.append("infra/compose/.env.example is missing")
        return
    keys = set(re.findall(r"^(" + dl.VAR_RE + r")=", open(path, encoding="utf-8").read(), re.M))
    for var in sorted(refs - keys):
        problems.append(".env.example does not list %s" % var)
    ignore = os.path.join(root, "infra", "compose", ".gitignore")
    if not os.path.exists(ignore) or ".env" not in open(ignore).read().split():
        problems.append("infra/compose/.gitignore must ignore .env (it holds the passwords)")


def check_service(root, c, seed, name, port, db, problems):
    svcs = c.get("services") or {}
    s = svcs.get(name)
    if s is None:
        problems.append("service %s is missing" % name)
        return
    build = s.get("build") or {}
    if build.get("dockerfile") != "infra/docker/Dockerfile" or \
            os.path.normpath(os.path.join(root, "infra", "compose", str(build.get("context")))) != \
            os.path.normpath(root):
        problems.append("%s: must build ../docker/Dockerfile with the repository as context" % name)
    args = {k: str(v) for k, v in (build.get("args") or {}).items()}
    if args.get("SERVICE") != name or args.get("HTTP_PORT") != str(port):
        problems.append("%s: build args %r, want SERVICE=%s HTTP_PORT=%d" % (name, args, name, port))
    if (port, port) not in published_ports(s):
        problems.append("%s: port %d is not published" % (name, port))
    env = env_dict(s)
    reads, why = dl.service_vars(name, root)
    problems.extend(why)
    for var in sorted(reads - set(env)):
        problems.append("%s: %s is read by the code but not set" % (name, var))
    for var in sorted(set(env) - reads):
        problems.append("%s: %s is set but no code reads it" % (name, var))
    expect = {"KAFKA_BOOTSTRAP_SERVERS": seed.listeners["PLAINTEXT"], "PGHOST": "postgres",
              "PGPORT": str(seed.ports["postgres"][0]), "REDIS_HOST": "redis",
              "REDIS_PORT": str(seed.ports["redis"][0]), "HTTP_PORT": str(port), "PGDATABASE": db}
    for var, value in expect.items():
        if var in env and env[var] != value:
            problems.append("%s: %s is %r, want %r" % (name, var, env[var], value))
    problems.extend(dl.console_problems(name, env, dl.services(root)))
    role, pwvar = dl.init_roles(root).get(db, (None, None))
    if env.get("PGUSER") != role or role in (None, "postgres"):
        problems.append("%s: PGUSER is %r, want its own role %r (init-roles.sh)" %
                        (name, env.get("PGUSER"), role))
    m = REQUIRED_VAR.match(env.get("PGPASSWORD") or "")
    if not m or m.group(1) != pwvar:
        problems.append("%s: PGPASSWORD must be ${%s:?...}, the password of %s" % (name, pwvar, role))
    if name in dl.REDIS_USERS:
        m = REQUIRED_VAR.match(env.get("REDIS_PASSWORD") or "")
        if env.get("REDIS_USERNAME") != name or not m or m.group(1) != "REDIS_PAYMENT_PASSWORD":
            problems.append("%s: Redis login must be REDIS_USERNAME=%s and REDIS_PASSWORD="
                            "${REDIS_PAYMENT_PASSWORD:?...} (redis-users.sh)" % (name, name))
    needs = {"postgres": "service_healthy", "kafka": "service_healthy",
             "kafka-init": "service_completed_successfully"}
    if name in dl.REDIS_USERS:
        needs["redis"] = "service_healthy"
    if name in seed.cassandra_users:
        needs["cassandra"] = "service_healthy"
        needs["cassandra-init"] = "service_completed_successfully"
    deps = depends(s)
    if deps != needs:
        problems.append("%s: depends_on %r, want %r" % (name, deps, needs))
    for dep, cond in deps.items():
        if cond == "service_healthy" and not (svcs.get(dep) or {}).get("healthcheck"):
            problems.append("%s: waits for %s to be healthy, which has no healthcheck" % (name, dep))


def pinned(image):
    """True for repository:tag with a version in the tag (not latest, not bare)."""
    m = re.match(r"^[^:@]+:v?(\d+)(\.\d+)+$", str(image or ""))
    return bool(m)


def mount_of(svc, host_dir):
    """The container path where host_dir (relative to infra/compose) is mounted
    read-only, or None."""
    for v in svc.get("volumes") or []:
        parts = str(v).split(":") if not isinstance(v, dict) else \
            [str(v.get("source")), str(v.get("target")), "ro" if v.get("read_only") else "rw"]
        if len(parts) >= 3 and os.path.normpath(parts[0]) == os.path.normpath(host_dir) \
                and "ro" in parts[2].split(","):
            return parts[1]
    return None


def check_observability(root, c, problems):
    svcs = c.get("services") or {}
    for name, volume in OBSERVABILITY.items():
        s = svcs.get(name)
        if s is None:
            problems.append("service %s (observability) is missing" % name)
            continue
        if not pinned(s.get("image")):
            problems.append("%s: image %r is not pinned to a version" % (name, s.get("image")))
        if not any(src == volume for src, _ in mounts(s)):
            problems.append("%s: its named volume %s is not mounted" % (name, volume))
        if volume not in (c.get("volumes") or {}):
            problems.append("named volume %s (%s's) is not declared" % (volume, name))
        if not (s.get("healthcheck") or {}).get("test"):
            problems.append("%s: no healthcheck" % name)
    for name, s in svcs.items():
        for dep in depends(s):
            if dep in OBSERVABILITY and name not in OBSERVABILITY:
                problems.append("%s: depends on %s; the system must run without it" % (name, dep))
    prom, graf = svcs.get("prometheus") or {}, svcs.get("grafana") or {}
    conf_dir = mount_of(prom, "../observability/prometheus")
    if not conf_dir:
        problems.append("prometheus: ../observability/prometheus is not mounted read-only")
    else:
        flags = dict(w.split("=", 1) for w in command_of(prom) if w.startswith("--") and "=" in w)
        conf = flags.get("--config.file", "")
        if os.path.dirname(conf) != conf_dir.rstrip("/"):
            problems.append("prometheus: --config.file=%r is not in its mount %s" % (conf, conf_dir))
        else:
            host = os.path.join(root, OBS_DIR, "prometheus", os.path.basename(conf))
            if not os.path.exists(host):
                problems.append("prometheus: %s does not exist" % os.path.relpath(host, root))
            else:
                cfg = dl.load_yaml(host) or {}
                for rf in cfg.get("rule_files") or []:
                    if not os.path.exists(os.path.join(os.path.dirname(host), rf)):
                        problems.append("prometheus.yml: rule file %s is not beside it" % rf)
                if not cfg.get("rule_files"):
                    problems.append("prometheus.yml: no rule_files (rules.yml)")
    prov = mount_of(graf, "../observability/grafana/provisioning")
    dash = mount_of(graf, "../observability/grafana/dashboards")
    if prov != "/etc/grafana/provisioning":
        problems.append("grafana: ../observability/grafana/provisioning is not mounted "
                        "read-only at /etc/grafana/provisioning")
    if not dash:
        problems.append("grafana: ../observability/grafana/dashboards is not mounted read-only")
    gdir = os.path.join(root, OBS_DIR, "grafana", "provisioning")
    port = next((cont for _, cont in published_ports(prom)), 9090)
    urls = [d.get("url") for f in sorted(os.listdir(os.path.join(gdir, "datasources")))
            for d in (dl.load_yaml(os.path.join(gdir, "datasources", f)) or {}).get("datasources") or []]
    if "http://prometheus:%d" % port not in urls:
        problems.append("grafana: no datasource at http://prometheus:%d (has %r)" % (port, urls))
    paths = [(p.get("options") or {}).get("path")
             for f in sorted(os.listdir(os.path.join(gdir, "dashboards")))
             for p in (dl.load_yaml(os.path.join(gdir, "dashboards", f)) or {}).get("providers") or []]
    if dash and dash not in paths:
        problems.append("grafana: no dashboard provider reads %s (paths %r)" % (dash, paths))
    if depends(graf).get("prometheus") != "service_healthy":
        problems.append("grafana: must start after a healthy prometheus")


def check(root):
    seed, problems = dl.load_seed(root)
    c = dl.load_yaml(os.path.join(root, "infra", "compose", "compose.yml"))
    services = dl.services(root)
    check_infra(c, seed, problems)
    check_kafka(c, seed, problems)
    check_volumes(c, seed, problems)
    check_postgres_init(root, c, services, problems)
    check_topics(root, c, seed, problems)
    check_cassandra(root, c, seed, dl.CassandraInit(root), problems)
    for name, (port, db) in services.items():
        check_service(root, c, seed, name, port, db, problems)
    check_env_example(root, password_refs(c, problems), problems)
    check_observability(root, c, problems)
    known = set(INFRA) | set(services) | {"kafka-init", "cassandra-init"} | set(OBSERVABILITY)
    for extra in sorted(set(c.get("services") or {}) - known):
        problems.append("service %s is neither the seed's nor one of the five" % extra)
    return problems


if __name__ == "__main__":
    sys.exit(dl.run_check("compose", check, sys.argv))
