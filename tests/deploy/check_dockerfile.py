#!/usr/bin/env python3
"""check_dockerfile.py - the basics of infra/docker/Dockerfile.

  check_dockerfile.py [root]

Checks: multi-stage (a debian:12 build stage; a runtime stage FROM scratch
that only copies the root the build stage assembled with runtime-root.sh:
no RUN, since it has no shell); the build stage installs every -dev package
of scripts/deps.sh plus cmake and builds the five services and the probe;
ARG SERVICE and HTTP_PORT, EXPOSE, a numeric non-root USER equal to the
Kubernetes runAsUser; a HEALTHCHECK running deta-healthcheck; exec-form
ENTRYPOINT; nothing piped from the network into a shell, no ADD of a URL; the
context ignore file keeps build trees out. What the image holds (its files,
its libraries resolved inside it) is checked on the built images by
images.sh; the context against the build by check_context.py.
"""

import os
import re
import sys

import deploylib as dl

ASSEMBLER = "runtime-root.sh"


def instructions(text):
    """[(INSTRUCTION, args)] with continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(instrs):
    """[{'from': image, 'name': alias, 'instrs': [...]}]"""
    out = []
    for word, args in instrs:
        if word == "FROM":
            parts = args.split()
            image = [p for p in parts if not p.startswith("--")][0]
            alias = parts[parts.index("AS") + 1] if "AS" in parts else (
                parts[parts.index("as") + 1] if "as" in parts else None)
            out.append({"from": image, "name": alias, "instrs": []})
        elif out:
            out[-1]["instrs"].append((word, args))
    return out


def apt_packages(stage):
    pkgs = []
    for word, args in stage["instrs"]:
        if word != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            tokens = cmd.split()
            if "apt-get" in tokens and "install" in tokens:
                pkgs += [t for t in tokens[tokens.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def deps_packages(root):
    text = open(os.path.join(root, "scripts", "deps.sh"), encoding="utf-8").read()
    m = re.search(r"PACKAGES=\((.*?)\)", text, re.S)
    return m.group(1).split() if m else []


def k8s_run_as_users(root):
    """The uids Kubernetes runs the service images as (container, else pod level)."""
    users = set()
    path = os.path.join(root, "infra", "k8s")
    for f in sorted(os.listdir(path)):
        if not f.endswith(".yaml") or f == "kustomization.yaml":
            continue
        for obj in dl.load_yaml_all(os.path.join(path, f)):
            spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
            pod_user = (spec.get("securityContext") or {}).get("runAsUser")
            for ctr in spec.get("containers") or []:
                if str(ctr.get("image", "")).startswith("delivery-eta/"):
                    user = (ctr.get("securityContext") or {}).get("runAsUser", pod_user)
                    users.add(str(user))
    return users


def check_stages(st, root, problems):
    if len(st) < 2:
        problems.append("not multi-stage: %d FROM" % len(st))
        return None, None
    build, runtime = st[0], st[-1]
    if build["from"] != "debian:12" or not build["name"]:
        problems.append("the first stage must be `FROM debian:12 AS <name>`, is %r" % build["from"])
    if runtime["from"] != "scratch":
        problems.append("the runtime stage must be FROM scratch, is %r" % runtime["from"])
    copies = [a for w, a in runtime["instrs"] if w == "COPY" and "--from=%s" % build["name"] in a]
    if not copies:
        problems.append("the runtime stage copies nothing from the build stage")
    build_runs = " ".join(a for w, a in build["instrs"] if w == "RUN")
    if ASSEMBLER not in build_runs:
        problems.append("the build stage does not run %s (the runtime root)" % ASSEMBLER)
    build_pkgs = set(apt_packages(build))
    for p in deps_packages(root):
        if p.endswith("-dev") and p not in build_pkgs:
            problems.append("the build stage lacks %s (scripts/deps.sh has it)" % p)
    for p in ("cmake", "pkg-config", "build-essential"):
        if p not in build_pkgs:
            problems.append("the build stage lacks %s" % p)
    build_runs = " ".join(a for w, a in build["instrs"] if w == "RUN")
    for target in list(dl.services(root)) + ["deta-healthcheck"]:
        if not re.search(r"--target\b[^&]*\b%s\b" % re.escape(target), build_runs):
            problems.append("the build stage does not build %s" % target)
    return build, runtime


def check_runtime(runtime, users, problems):
    for w, a in runtime["instrs"]:
        if w == "RUN":
            problems.append("RUN in the runtime stage (FROM scratch has no shell): %s" % a[:60])
    words = [w for w, _ in runtime["instrs"]]
    args = {w: a for w, a in runtime["instrs"]}  # the last of each
    user = args.get("USER", "").split(":")[0]
    if "USER" not in words or not user.isdigit() or int(user) == 0:
        problems.append("the runtime stage must end as a numeric non-root USER, is %r" % user)
    elif users and users != {user}:
        problems.append("USER %s differs from the Kubernetes runAsUser %s" % (user, sorted(users)))
    hc = args.get("HEALTHCHECK", "")
    if "deta-healthcheck" not in hc or "CMD" not in hc:
        problems.append("no HEALTHCHECK running deta-healthcheck, is %r" % hc)
    if re.search(r"\b(curl|wget)\b", hc):
        problems.append("HEALTHCHECK uses curl/wget: the runtime image has none")
    if "--interval=" not in hc:
        problems.append("HEALTHCHECK without an --interval")
    if not args.get("EXPOSE"):
        problems.append("no EXPOSE")
    ep = args.get("ENTRYPOINT", "")
    if not ep.startswith("["):
        problems.append("ENTRYPOINT must be exec form (the service is PID 1 and gets SIGTERM)")


def check_general(instrs, root, problems):
    argnames = {a.split("=")[0] for w, a in instrs if w == "ARG"}
    for a in ("SERVICE", "HTTP_PORT"):
        if a not in argnames:
            problems.append("no ARG %s" % a)
    for w, a in instrs:
        if w == "RUN" and re.search(r"\b(curl|wget)\b[^|;&]*\|\s*(ba|da|z)?sh\b", a):
            problems.append("RUN pipes a download into a shell: %s" % a[:80])
        if w == "ADD" and re.search(r"https?://", a):
            problems.append("ADD of a URL: %s" % a[:80])
    ignore = os.path.join(root, "infra", "docker", "Dockerfile.dockerignore")
    if not os.path.exists(ignore):
        problems.append("no infra/docker/Dockerfile.dockerignore: build trees would be sent")
    else:
        lines = {l.strip() for l in open(ignore) if l.strip() and not l.startswith("#")}
        for d in ("build", ".local", ".git"):
            if d not in lines:
                problems.append("Dockerfile.dockerignore does not leave out %s" % d)


def check_console(instrs, problems):
    """query-api's image carries the web console's files (CMake's console component
    from frontend/) and points QUERY_CONSOLE_DIR at them."""
    if not any(w == "COPY" and a.split()[0].rstrip("/") == "frontend" for w, a in instrs):
        problems.append("the build stage does not COPY frontend/ (the web console)")
    if not any(w == "RUN" and "--component console" in a for w, a in instrs):
        problems.append("no RUN installs the console component (cmake --install ... "
                        "--component console)")
    envs = " ".join(a for w, a in instrs if w == "ENV")
    if not re.search(r'\bQUERY_CONSOLE_DIR="?%s"?(\s|$)' % re.escape(dl.CONSOLE_DIR), envs):
        problems.append("ENV QUERY_CONSOLE_DIR is not %s" % dl.CONSOLE_DIR)


def check(root):
    problems = []
    text = open(os.path.join(root, "infra", "docker", "Dockerfile"), encoding="utf-8").read()
    instrs = instructions(text)
    st = stages(instrs)
    build, runtime = check_stages(st, root, problems)
    check_general(instrs, root, problems)
    check_console(instrs, problems)
    if runtime:
        check_runtime(runtime, k8s_run_as_users(root), problems)
    return problems


if __name__ == "__main__":
    args = sys.argv
    root = os.path.abspath(args[1]) if len(args) > 1 else dl.REPO
    try:
        found = check(root)
    except Exception as e:
        found = ["%s: %s" % (type(e).__name__, e)]
    sys.exit(dl.report("dockerfile", found))
