#!/usr/bin/env python3
"""compose_service.py - one service of infra/compose/compose.yml, as an engine
would take it, for tests/deploy/images.sh to build and run the image exactly
as compose does.

  compose_service.py build SERVICE   the build: lines `image NAME`,
                                     `context DIR`, `dockerfile FILE`
                                     (absolute paths) and `arg NAME=VALUE`
  compose_service.py env SERVICE     the environment compose gives the
                                     container: NAME=VALUE lines (the format
                                     of `podman run --env-file`)

Variables in values are substituted the way compose does, from this process's
environment: ${VAR:?message} must be set and not empty (else the message and
exit 1), ${VAR:-default} and ${VAR-default} fall back, ${VAR} and $VAR are the
value or empty, $$ is a dollar sign. A value with a newline cannot go through
an env file and is refused.
"""

import os
import re
import sys

import deploylib as dl

COMPOSE = os.path.join(dl.REPO, "infra", "compose", "compose.yml")
VARIABLE = re.compile(r"\$(?:\$|\{(" + dl.VAR_RE + r")(?:(:?[?\-])([^}]*))?\}|(" + dl.VAR_RE + r"))")


class Unset(Exception):
    pass


def substitute(value):
    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        current = os.environ.get(name)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise Unset("%s: %s" % (name, arg or "must be set"))
            return current
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        return current or ""
    return VARIABLE.sub(one, str(value))


def service(name):
    svc = (dl.load_yaml(COMPOSE).get("services") or {}).get(name)
    if svc is None:
        raise Unset("compose.yml has no service %s" % name)
    return svc


def build_lines(name):
    svc = service(name)
    build = svc.get("build")
    if not isinstance(build, dict):
        raise Unset("%s: no build section" % name)
    base = os.path.dirname(COMPOSE)
    context = os.path.normpath(os.path.join(base, substitute(build.get("context", "."))))
    dockerfile = os.path.normpath(os.path.join(context, substitute(build.get("dockerfile",
                                                                             "Dockerfile"))))
    lines = ["image %s" % substitute(svc.get("image", "")), "context %s" % context,
             "dockerfile %s" % dockerfile]
    args = build.get("args") or {}
    if isinstance(args, list):
        args = dict(a.split("=", 1) for a in args)
    lines += ["arg %s=%s" % (key, substitute(value)) for key, value in args.items()]
    return lines


def env_lines(name):
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, os.environ.get(e, "")) for e in env)
    lines = []
    for key, value in env.items():
        text = "" if value is None else substitute(value)
        if "\n" in text:
            raise Unset("%s: a newline cannot pass through an env file" % key)
        lines.append("%s=%s" % (key, text))
    return lines


def main(argv):
    if len(argv) != 3 or argv[1] not in ("build", "env"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        lines = (build_lines if argv[1] == "build" else env_lines)(argv[2])
    except Unset as e:
        print("compose_service.py: %s" % e, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
