#!/usr/bin/env python3
"""check_k8s.py - infra/k8s against the seed and the services' code.

  check_k8s.py [root]     (root: a repository tree; default: this one)

Checks:
  - kustomization.yaml lists every manifest of the folder (and only existing
    ones), sets the namespace, which namespace.yaml defines, and generates the
    Secret from secrets.env (ignored by git; secrets.env.example lists exactly
    the keys the pods use, with placeholders only: change-me, or empty for
    the Kafka credentials a PLAINTEXT cluster does without);
  - the seed's infrastructure: a Deployment and a Service per part with the
    seed's image and port, the readiness probe being the seed's health check
    at its interval, the seed's volumes as claims mounted at the seed's paths,
    Kafka with one PLAINTEXT listener, Postgres and the topic Job running the
    very text of infra/compose's init files;
  - Cassandra started through init-cassandra.sh --server (authentication on,
    the same text as infra/compose's, from a ConfigMap) with a readiness probe
    that logs in; the Job cassandra-init running it with the superuser's and
    every role's password from the Secret; the seed's Cassandra user
    (query-api) with QUERY_STORE=cassandra, the seed's keyspace, datacenter and
    replication, a role of init-cassandra.sh and that role's password, and an
    init container that waits until the role logs in;
  - the five services: readiness and liveness probes on their health
    endpoints and port, every variable their code reads coming from the
    ConfigMaps or env (none unknown), their own role and database, the
    password only from the Secret, a non-root security context; the web
    console's settings and CORS as for compose (deploylib.console_problems);
  - the five services' static group membership: each a StatefulSet (stable
    pod names) whose serviceName is its Service, KAFKA_STATIC_MEMBERSHIP "on"
    from deta-common, and INSTANCE_ID the pod's name (metadata.name), so that
    each consumer's group.instance.id stays the same across a restart and a
    rolling update (lib/src/kafka_conf.c);
  - every container (init containers and the Job included): resource requests
    and limits for cpu and memory, requests not above limits; every pod:
    enableServiceLinks false (service links would inject REDIS_PORT=tcp://...
    and the like); every ConfigMap, Secret and key referenced exists; no
    password anywhere but in the Secret.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import deploylib as dl

INFRA = ("zookeeper", "kafka", "postgres", "cassandra", "redis")  # a Deployment each
# The services are StatefulSets: a pod's name, its INSTANCE_ID, survives a restart
# and a rolling update, and with it its consumers' static group membership.
SERVICE_KIND = "StatefulSet"
RUN_KUSTOMIZE = True  # test_mutations.py turns it off: no case is about rendering


def quantity(q):
    """A Kubernetes quantity as a float (cpu in cores, memory in bytes)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError("not a quantity: %r" % q)
    mult = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}[m.group(2)]
    return float(m.group(1)) * mult


class Manifests:
    def __init__(self, root, problems):
        self.dir = os.path.join(root, "infra", "k8s")
        self.kust = dl.load_yaml(os.path.join(self.dir, "kustomization.yaml"))
        self.objects = []
        for res in self.kust.get("resources") or []:
            path = os.path.join(self.dir, res)
            if not os.path.exists(path):
                problems.append("kustomization.yaml lists %s, which does not exist" % res)
                continue
            for doc in dl.load_yaml_all(path):
                doc["_file"] = res
                self.objects.append(doc)
        self.secrets = {}  # name -> keys, from the secretGenerator's example files
        for gen in self.kust.get("secretGenerator") or []:
            keys = set()
            for env in gen.get("envs") or []:
                example = os.path.join(self.dir, env + ".example")
                if not os.path.exists(example):
                    problems.append("secretGenerator %s: no %s.example to copy from" %
                                    (gen.get("name"), env))
                    continue
                text = open(example, encoding="utf-8").read()
                for key, value in re.findall(r"^(" + dl.VAR_RE + r")=(.*)$", text, re.M):
                    keys.add(key)
                    if value != "change-me" and not (value == "" and
                                                     dl.is_optional_credential_key(key)):
                        problems.append("%s.example: %s has a value; placeholders only "
                                        "(change-me; empty for *_KAFKA_*PASSWORD)" % (env, key))
                ignore = os.path.join(self.dir, ".gitignore")
                if not os.path.exists(ignore) or env not in open(ignore).read().split():
                    problems.append("infra/k8s/.gitignore must ignore %s" % env)
            if gen.get("literals"):
                problems.append("secretGenerator %s: literals put passwords in git" % gen.get("name"))
            self.secrets[gen.get("name")] = keys
        for obj in self.objects:
            if obj.get("kind") == "Secret":
                self.secrets[obj["metadata"]["name"]] = set(obj.get("data") or {}) | \
                    set(obj.get("stringData") or {})

    def find(self, kind, name=None):
        return [o for o in self.objects if o.get("kind") == kind and
                (name is None or o["metadata"]["name"] == name)]

    def one(self, kind, name, problems):
        found = self.find(kind, name)
        if len(found) != 1:
            problems.append("want one %s %s, found %d" % (kind, name, len(found)))
            return None
        return found[0]

    def configmap(self, name):
        found = self.find("ConfigMap", name)
        return (found[0].get("data") or {}) if found else None


def pod_spec(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return ((spec.get("template") or {}).get("spec")) or {}


def containers(spec):
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def check_kustomization(root, m, problems):
    listed = set(m.kust.get("resources") or [])
    on_disk = {f for f in os.listdir(m.dir) if f.endswith((".yaml", ".yml"))} - \
        {"kustomization.yaml"}
    for f in sorted(on_disk - listed):
        problems.append("infra/k8s/%s is not in kustomization.yaml's resources" % f)
    ns = m.kust.get("namespace")
    if not ns or not m.find("Namespace", ns):
        problems.append("kustomization.yaml's namespace %r is not defined by a Namespace" % ns)


def check_pods(m, problems):
    """Every workload: limits and requests, no service links, references resolve."""
    for obj in m.objects:
        if obj.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            continue
        name = "%s %s" % (obj["kind"], obj["metadata"]["name"])
        spec = pod_spec(obj)
        if spec.get("enableServiceLinks") is not False:
            problems.append("%s: enableServiceLinks must be false" % name)
        for ctr in containers(spec):
            where = "%s/%s" % (name, ctr.get("name"))
            res = ctr.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        problems.append("%s: no %s.%s" % (where, kind, r))
            for r in ("cpu", "memory"):
                try:
                    req, lim = res["requests"][r], res["limits"][r]
                    if quantity(req) > quantity(lim):
                        problems.append("%s: %s request %s above its limit %s" % (where, r, req, lim))
                except (KeyError, TypeError):
                    pass
                except ValueError as e:
                    problems.append("%s: %s" % (where, e))
            for ref in ctr.get("envFrom") or []:
                cm = (ref.get("configMapRef") or {}).get("name")
                if cm and m.configmap(cm) is None:
                    problems.append("%s: envFrom ConfigMap %s does not exist" % (where, cm))
                if ref.get("secretRef"):
                    problems.append("%s: envFrom a whole Secret gives the pod every password"
                                    % where)
            for e in ctr.get("env") or []:
                check_env_entry(m, where, e, problems)
        for vol in spec.get("volumes") or []:
            cm = (vol.get("configMap") or {}).get("name")
            if cm and m.configmap(cm) is None:
                problems.append("%s: volume ConfigMap %s does not exist" % (name, cm))


def check_env_entry(m, where, e, problems):
    value_from = e.get("valueFrom") or {}
    if dl.is_password_name(e.get("name", "")):
        if "value" in e or "secretKeyRef" not in value_from:
            problems.append("%s: %s must come from a Secret (secretKeyRef)" % (where, e["name"]))
    ref = value_from.get("secretKeyRef")
    if ref:
        keys = m.secrets.get(ref.get("name"))
        if keys is None:
            problems.append("%s: Secret %s does not exist" % (where, ref.get("name")))
        elif ref.get("key") not in keys:
            problems.append("%s: Secret %s has no key %s" % (where, ref.get("name"), ref.get("key")))
    ref = value_from.get("configMapKeyRef")
    if ref:
        data = m.configmap(ref.get("name"))
        if data is None or ref.get("key") not in data:
            problems.append("%s: ConfigMap key %s/%s does not exist" % (where, ref.get("name"),
                                                                        ref.get("key")))


def check_no_literal_passwords(m, problems):
    for cm in m.find("ConfigMap"):
        for key in cm.get("data") or {}:
            if dl.is_password_name(key):
                problems.append("ConfigMap %s: %s is a password; it belongs in a Secret" %
                                (cm["metadata"]["name"], key))
    for s in m.find("Secret"):
        problems.append("Secret %s is written in the manifests; generate it from secrets.env" %
                        s["metadata"]["name"])


def ports_of(ctr):
    return {p.get("name"): p.get("containerPort") for p in ctr.get("ports") or []}


def probe_port(probe, ctr):
    for kind in ("httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind].get("port")
            return ports_of(ctr).get(port, port) if isinstance(port, str) else port
    return None


def service_port(m, name, problems):
    svc = m.one("Service", name, problems)
    if not svc:
        return None
    ports = [p.get("port") for p in svc["spec"].get("ports") or []]
    return ports[0] if len(ports) == 1 else ports


def main_container(m, name, problems):
    """(workload, its container) of name: the Deployment of a part of the
    infrastructure, the StatefulSet of a service; None for what is missing."""
    kind = "Deployment" if name in INFRA else SERVICE_KIND
    obj = m.one(kind, name, problems)
    if not obj:
        return None, None
    ctrs = pod_spec(obj).get("containers") or []
    if len(ctrs) != 1:
        problems.append("%s: want one container, found %d" % (name, len(ctrs)))
        return obj, None
    return obj, ctrs[0]


def env_names(m, ctr):
    names = {e["name"]: e for e in ctr.get("env") or []}
    from_maps = {}
    for ref in ctr.get("envFrom") or []:
        data = m.configmap((ref.get("configMapRef") or {}).get("name")) or {}
        for k, v in data.items():
            from_maps[k] = str(v)
    return names, from_maps


def env_value(m, ctr, var):
    names, from_maps = env_names(m, ctr)
    if var in names:
        return str(names[var].get("value")) if "value" in names[var] else None
    return from_maps.get(var)


def check_infra(root, m, seed, problems):
    for name in INFRA:
        dep, ctr = main_container(m, name, problems)
        if not ctr:
            continue
        if ctr.get("image") != seed.images[name]:
            problems.append("%s: image %r, the seed says %r" % (name, ctr.get("image"),
                                                                 seed.images[name]))
        want = seed.ports[name][0]
        if want not in ports_of(ctr).values():
            problems.append("%s: container port %d missing" % (name, want))
        if service_port(m, name, problems) != want:
            problems.append("%s: Service port is not %d" % (name, want))
        rp = ctr.get("readinessProbe")
        if not rp:
            problems.append("%s: no readiness probe (the seed's health check)" % name)
        else:
            if "exec" in rp:
                argv = [str(a) for a in rp["exec"].get("command") or []]
            elif "tcpSocket" in rp:
                argv = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/%s" % probe_port(rp, ctr)]
            else:
                argv = []
            if not seed.health_matches(name, argv):
                problems.append("%s: readiness probe %r is not the seed's %r" %
                                (name, rp, seed.health[name][0]))
            if float(rp.get("periodSeconds", 10)) != seed.health[name][1]:
                problems.append("%s: readiness period %ss, the seed's interval is %ss" %
                                (name, rp.get("periodSeconds", 10), int(seed.health[name][1])))
        if not ctr.get("livenessProbe"):
            problems.append("%s: no liveness probe" % name)
    for vol, (service, path) in seed.volumes.items():
        claim = vol.replace("_", "-")
        if not m.find("PersistentVolumeClaim", claim):
            problems.append("no PersistentVolumeClaim %s (the seed's volume %s)" % (claim, vol))
        dep, ctr = main_container(m, service, [])
        if not ctr:
            continue
        vols = {v["name"]: (v.get("persistentVolumeClaim") or {}).get("claimName")
                for v in pod_spec(dep).get("volumes") or []}
        mounted = {vols.get(vm["name"]): vm["mountPath"] for vm in ctr.get("volumeMounts") or []}
        if mounted.get(claim) != path:
            problems.append("%s: claim %s is not mounted at %s" % (service, claim, path))


def check_kafka(root, m, seed, problems):
    dep, ctr = main_container(m, "kafka", [])
    if not ctr:
        return
    env = {e["name"]: str(e.get("value", "")) for e in ctr.get("env") or []}
    for var in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
        listeners = [x for x in env.get(var, "").split(",") if x]
        if len(listeners) != 1 or not listeners[0].startswith("PLAINTEXT://"):
            problems.append("kafka: %s must be a single PLAINTEXT listener (the seed), is %r" %
                            (var, env.get(var)))
    if env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP") != "PLAINTEXT:PLAINTEXT":
        problems.append("kafka: KAFKA_LISTENER_SECURITY_PROTOCOL_MAP must be PLAINTEXT:PLAINTEXT")
    if env.get("KAFKA_ZOOKEEPER_CONNECT") != "zookeeper:%d" % seed.ports["zookeeper"][0]:
        problems.append("kafka: KAFKA_ZOOKEEPER_CONNECT is %r" % env.get("KAFKA_ZOOKEEPER_CONNECT"))
    port = service_port(m, "kafka", [])
    for cm in ("deta-common", "kafka-topics-config"):
        data = m.configmap(cm) or {}
        if data.get("KAFKA_BOOTSTRAP_SERVERS") != "kafka:%s" % port:
            problems.append("ConfigMap %s: KAFKA_BOOTSTRAP_SERVERS must be kafka:%s" % (cm, port))
    compose_script = open(os.path.join(root, "infra", "compose", "init-topics.sh"),
                          encoding="utf-8").read()
    scripts = m.configmap("kafka-init-scripts") or {}
    if scripts.get("init-topics.sh") != compose_script:
        problems.append("ConfigMap kafka-init-scripts: init-topics.sh differs from "
                        "infra/compose/init-topics.sh")
    if sorted(dl.topics_in_script(scripts.get("init-topics.sh", ""))) != \
            sorted(dl.repo_topics(root, seed, problems)):
        problems.append("kafka-init-scripts: the topics are not the system's (%s)"
                        % dl.TOPICS_HEADER)
    job = m.one("Job", "kafka-init", problems)
    if job:
        spec = pod_spec(job)
        ctr = (spec.get("containers") or [{}])[0]
        cmd = " ".join(ctr.get("command") or []) + " " + " ".join(ctr.get("args") or [])
        if "init-topics.sh" not in cmd or ctr.get("image") != seed.images["kafka"]:
            problems.append("Job kafka-init must run init-topics.sh in %s" % seed.images["kafka"])
        if not (m.configmap("kafka-topics-config") or {}).get("KAFKA_TOPIC_PARTITIONS"):
            problems.append("ConfigMap kafka-topics-config: KAFKA_TOPIC_PARTITIONS is not set")


def check_redis_acl(root, m, problems):
    """Redis runs with the users of infra/compose/redis-users.sh (same text)."""
    data = m.configmap("redis-init") or {}
    text = open(os.path.join(root, "infra", "compose", "redis-users.sh"), encoding="utf-8").read()
    if data.get("redis-users.sh") != text:
        problems.append("ConfigMap redis-init: redis-users.sh missing or different from "
                        "infra/compose/redis-users.sh")
    dep, ctr = main_container(m, "redis", [])
    if not ctr:
        return
    cmd = " ".join(ctr.get("command") or []) + " " + " ".join(ctr.get("args") or [])
    if "redis-users.sh" not in cmd or "--aclfile" not in cmd:
        problems.append("redis: must start with the ACL file of redis-users.sh (--aclfile)")
    names = {e["name"] for e in ctr.get("env") or []}
    for var in ("REDIS_ADMIN_PASSWORD", "REDIS_PAYMENT_PASSWORD"):
        if var not in names:
            problems.append("redis: %s (read by redis-users.sh) is not passed" % var)


def check_postgres(root, m, services, problems):
    data = m.configmap("postgres-init") or {}
    compose = os.path.join(root, "infra", "compose")
    texts = {f: open(os.path.join(compose, f), encoding="utf-8").read()
             for f in ("init-postgres.sql", "init-roles.sh")}
    keys = sorted(data)
    for f, text in texts.items():
        key = next((k for k in keys if k.endswith(f)), None)
        if key is None or data[key] != text:
            problems.append("ConfigMap postgres-init: %s missing or different from "
                            "infra/compose/%s" % (f, f))
    if [k for k in keys if k.endswith(".sql")] > [k for k in keys if k.endswith(".sh")]:
        problems.append("ConfigMap postgres-init: the roles script must sort after the SQL")
    dep, ctr = main_container(m, "postgres", [])
    if not ctr:
        return
    vols = {v["name"]: (v.get("configMap") or {}).get("name")
            for v in pod_spec(dep).get("volumes") or []}
    if not any(vols.get(vm["name"]) == "postgres-init" and
               vm["mountPath"] == "/docker-entrypoint-initdb.d"
               for vm in ctr.get("volumeMounts") or []):
        problems.append("postgres: postgres-init is not mounted at /docker-entrypoint-initdb.d")
    names = {e["name"] for e in ctr.get("env") or []}
    for _, var in dl.init_roles(root).values():
        if var not in names:
            problems.append("postgres: %s (read by init-roles.sh) is not passed" % var)
    # compose's server settings (logical decoding, the bound on a slot, the hba
    # file) and compose's hba file, mounted where hba_file says.
    compose_pg = (dl.load_yaml(os.path.join(compose, "compose.yml")).get("services") or {}) \
        .get("postgres") or {}
    want = [str(w) for w in (compose_pg.get("command") or [])[1:]]
    args = [str(w) for w in (ctr.get("command") or []) + (ctr.get("args") or [])]
    if args != want:
        problems.append("postgres: args %r differ from compose's command %r" % (args, want))
    settings = dl.postgres_settings(args)
    problems += dl.postgres_settings_problems("postgres", settings, len(dl.init_roles(root)))
    hba_text = open(os.path.join(root, dl.PG_HBA), encoding="utf-8").read()
    if (m.configmap("postgres-hba") or {}).get("pg_hba.conf") != hba_text:
        problems.append("ConfigMap postgres-hba: pg_hba.conf missing or different from "
                        "infra/compose/pg_hba.conf")
    hba = settings.get("hba_file") or ""
    if not any(vols.get(vm["name"]) == "postgres-hba" and
               vm["mountPath"].rstrip("/") == os.path.dirname(hba)
               for vm in ctr.get("volumeMounts") or []):
        problems.append("postgres: postgres-hba is not mounted at %s" % os.path.dirname(hba))


def secret_key(ctr, var):
    """The Secret key an env entry of ctr takes var from, or None."""
    for e in ctr.get("env") or []:
        if e.get("name") == var:
            return (((e.get("valueFrom") or {}).get("secretKeyRef")) or {}).get("key")
    return None


def runs_script(ctr, script, option):
    words = [str(w) for w in (ctr.get("command") or []) + (ctr.get("args") or [])]
    opts = {"--server", "--wait"} & set(words)
    return any(w.endswith(script) for w in words) and opts == ({option} if option else set())


def mounts_configmap(m, spec, ctr, configmap):
    vols = {v["name"]: (v.get("configMap") or {}).get("name") for v in spec.get("volumes") or []}
    return any(vols.get(vm["name"]) == configmap for vm in ctr.get("volumeMounts") or [])


def check_cassandra(root, m, seed, init, problems):
    problems.extend(init.problems)
    scripts = m.configmap("cassandra-init-scripts") or {}
    if scripts.get("init-cassandra.sh") != init.text:
        problems.append("ConfigMap cassandra-init-scripts: init-cassandra.sh missing or "
                        "different from infra/compose/init-cassandra.sh")
    port = seed.ports["cassandra"][0]
    dep, ctr = main_container(m, "cassandra", [])
    server_dc = None
    if ctr:
        if not runs_script(ctr, "init-cassandra.sh", "--server") or \
                not mounts_configmap(m, pod_spec(dep), ctr, "cassandra-init-scripts"):
            problems.append("cassandra: must start through init-cassandra.sh --server from "
                            "cassandra-init-scripts (authentication on)")
        rp = (ctr.get("readinessProbe") or {}).get("exec") or {}
        if not dl.probe_logs_in([str(a) for a in rp.get("command") or []],
                                "CASSANDRA_SUPERUSER_PASSWORD"):
            problems.append("cassandra: the readiness probe must log in (-u, -p $CASSANDRA_"
                            "SUPERUSER_PASSWORD): with authentication on, cqlsh gets nothing without")
        if secret_key(ctr, "CASSANDRA_SUPERUSER_PASSWORD") != "CASSANDRA_SUPERUSER_PASSWORD":
            problems.append("cassandra: CASSANDRA_SUPERUSER_PASSWORD (its probe's) must be the "
                            "Secret's CASSANDRA_SUPERUSER_PASSWORD")
        server_dc = env_value(m, ctr, "CASSANDRA_DC")
    job = m.one("Job", "cassandra-init", problems)
    if job:
        spec = pod_spec(job)
        jctr = (spec.get("containers") or [{}])[0]
        if jctr.get("image") != seed.images["cassandra"] or \
                not runs_script(jctr, "init-cassandra.sh", None) or \
                not mounts_configmap(m, spec, jctr, "cassandra-init-scripts"):
            problems.append("Job cassandra-init must run init-cassandra.sh (no option) from "
                            "cassandra-init-scripts in %s" % seed.images["cassandra"])
        if (env_value(m, jctr, "CQLSH_HOST"), env_value(m, jctr, "CQLSH_PORT") or str(port)) != \
                ("cassandra", str(port)):
            problems.append("Job cassandra-init: CQLSH_HOST/CQLSH_PORT must be cassandra:%d" % port)
        for var in ["CASSANDRA_SUPERUSER_PASSWORD"] + sorted(init.roles.values()):
            if secret_key(jctr, var) != var:
                problems.append("Job cassandra-init: %s (read by init-cassandra.sh) must be the "
                                "Secret's %s" % (var, var))
    for name in sorted(seed.cassandra_users):
        uobj, uctr = main_container(m, name, [])
        if not uctr:
            continue
        names, from_maps = env_names(m, uctr)
        env = {var: env_value(m, uctr, var) for var in set(names) | set(from_maps)}
        pw_var = secret_key(uctr, "CASSANDRA_PASSWORD")
        problems.extend(dl.query_store_problems(name, env, pw_var, seed, init, server_dc))
        spec = pod_spec(uobj)
        waits = [c for c in spec.get("initContainers") or []
                 if runs_script(c, "init-cassandra.sh", "--wait")]
        if not waits:
            problems.append("%s: no init container waits for its Cassandra role "
                            "(init-cassandra.sh --wait)" % name)
        for w in waits:
            if w.get("image") != seed.images["cassandra"] or \
                    not mounts_configmap(m, spec, w, "cassandra-init-scripts") or \
                    env_value(m, w, "CQLSH_HOST") != "cassandra":
                problems.append("%s/%s: must run init-cassandra.sh --wait from "
                                "cassandra-init-scripts in %s against cassandra"
                                % (name, w.get("name"), seed.images["cassandra"]))
            if pw_var and secret_key(w, pw_var) != pw_var:
                problems.append("%s/%s: waits with a password other than its CASSANDRA_PASSWORD "
                                "(the Secret's %s)" % (name, w.get("name"), pw_var))


def check_static_membership(m, name, sts, ctr, problems):
    """A service's consumers join their groups as static members
    (lib/src/kafka_conf.c): group.instance.id <INSTANCE_ID>.<topic>, which must
    be the same when the pod comes back, or every restart and rollout would
    leave the old member's partitions unread for the session timeout."""
    if sts["spec"].get("serviceName") != name:
        problems.append("%s: the StatefulSet's serviceName is %r, want its Service %r" %
                        (name, sts["spec"].get("serviceName"), name))
    common = (m.configmap("deta-common") or {}).get("KAFKA_STATIC_MEMBERSHIP")
    value = env_value(m, ctr, "KAFKA_STATIC_MEMBERSHIP")
    if common != "on" or value != "on":
        problems.append('%s: KAFKA_STATIC_MEMBERSHIP is %r (deta-common: %r), want "on" from '
                        "deta-common" % (name, value, common))
    names, _ = env_names(m, ctr)
    field = (((names.get("INSTANCE_ID") or {}).get("valueFrom") or {}).get("fieldRef") or {}) \
        .get("fieldPath")
    if field != "metadata.name":
        problems.append("%s: INSTANCE_ID must be the pod's name (fieldRef metadata.name, stable "
                        "in a StatefulSet): it names the static group members" % name)


def check_service(root, m, name, port, db, problems):
    sts, ctr = main_container(m, name, problems)
    if not sts and m.find("Deployment", name):
        problems.append("%s: a Deployment; must be a %s (stable pod names for static group "
                        "membership)" % (name, SERVICE_KIND))
    if not ctr:
        return
    check_static_membership(m, name, sts, ctr, problems)
    if service_port(m, name, problems) != port:
        problems.append("%s: Service port is not %d" % (name, port))
    if port not in ports_of(ctr).values():
        problems.append("%s: container port %d missing" % (name, port))
    if not str(ctr.get("image", "")).startswith("delivery-eta/%s:" % name):
        problems.append("%s: image %r is not delivery-eta/%s:<tag>" % (name, ctr.get("image"), name))
    for kind in ("readinessProbe", "livenessProbe"):
        probe = ctr.get(kind) or {}
        path = (probe.get("httpGet") or {}).get("path", "")
        if not path.startswith("/actuator/health") or probe_port(probe, ctr) != port:
            problems.append("%s: %s must GET /actuator/health... on port %d, is %r" %
                            (name, kind, port, probe))
    reads, why = dl.service_vars(name, root)
    problems.extend(why)
    names, from_maps = env_names(m, ctr)
    have = set(names) | set(from_maps)
    for var in sorted(reads - have):
        problems.append("%s: %s is read by the code but not set" % (name, var))
    for var in sorted(have - reads):
        problems.append("%s: %s is set but no code reads it" % (name, var))
    problems.extend(dl.console_problems(
        name, {var: env_value(m, ctr, var) for var in have}, dl.services(root)))
    role, pwvar = dl.init_roles(root).get(db, (None, None))
    expect = {"HTTP_PORT": str(port), "PGDATABASE": db, "PGUSER": role, "PGHOST": "postgres",
              "REDIS_HOST": "redis"}
    for var, want in expect.items():
        if env_value(m, ctr, var) != want:
            problems.append("%s: %s is %r, want %r" % (name, var, env_value(m, ctr, var), want))
    ref = ((names.get("PGPASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    if ref.get("key") != pwvar:
        problems.append("%s: PGPASSWORD must be the Secret's %s (the password of %s)" %
                        (name, pwvar, role))
    spec = pod_spec(sts)
    sc = dict(spec.get("securityContext") or {})
    sc.update(ctr.get("securityContext") or {})
    if sc.get("runAsNonRoot") is not True or not sc.get("runAsUser"):
        problems.append("%s: must run as non-root with a numeric runAsUser" % name)
    if (ctr.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False:
        problems.append("%s: allowPrivilegeEscalation must be false" % name)


def check_kustomize_build(root, problems):
    """When kubectl is installed: `kubectl kustomize` renders the folder (with
    secrets.env made from its example) and puts everything in the namespace."""
    kubectl = shutil.which("kubectl")
    if not RUN_KUSTOMIZE:
        return
    if not kubectl:
        print("note: no kubectl: the kustomize rendering is not checked")
        return
    with tempfile.TemporaryDirectory(prefix="deta-k8s-") as tmp:
        copy = os.path.join(tmp, "k8s")
        shutil.copytree(os.path.join(root, "infra", "k8s"), copy,
                        ignore=shutil.ignore_patterns("secrets.env"))
        shutil.copy(os.path.join(copy, "secrets.env.example"), os.path.join(copy, "secrets.env"))
        run = subprocess.run([kubectl, "kustomize", copy], capture_output=True, text=True,
                             check=False, timeout=60)
    if run.returncode != 0:
        problems.append("kubectl kustomize infra/k8s failed: %s" % run.stderr.strip()[:300])
        return
    namespace = dl.load_yaml(os.path.join(root, "infra", "k8s", "kustomization.yaml")).get("namespace")
    for obj in dl.yaml.safe_load_all(run.stdout):
        if obj and obj.get("kind") != "Namespace" and \
                obj["metadata"].get("namespace") != namespace:
            problems.append("rendered %s %s is outside the namespace" %
                            (obj.get("kind"), obj["metadata"].get("name")))


def check(root):
    seed, problems = dl.load_seed(root)
    m = Manifests(root, problems)
    services = dl.services(root)
    check_kustomization(root, m, problems)
    check_kustomize_build(root, problems)
    check_pods(m, problems)
    check_no_literal_passwords(m, problems)
    check_infra(root, m, seed, problems)
    check_kafka(root, m, seed, problems)
    check_postgres(root, m, services, problems)
    check_redis_acl(root, m, problems)
    check_cassandra(root, m, seed, dl.CassandraInit(root), problems)
    for name, (port, db) in services.items():
        check_service(root, m, name, port, db, problems)
    return problems


if __name__ == "__main__":
    sys.exit(dl.run_check("k8s", check, sys.argv))
