#!/usr/bin/env python3
"""check_context.py - the image's build context against the build.

  check_context.py [root] [--configure]

An image build sees the repository only through two filters: the ignore file
(infra/docker/Dockerfile.dockerignore, which docker's BuildKit reads next to
the Dockerfile and tests/deploy/images.sh passes to podman) and the build
stage's COPY instructions. A directory added to the CMake build and forgotten
by either breaks every image while every other test passes (bench/ did). So:

  1. the context: the files under root that the ignore file lets through,
     by Docker's rules (patterns of Go's filepath.Match plus `**`, a pattern
     matching a directory leaves out everything under it, `!` lets a path back
     in, the last matching pattern decides);
  2. every COPY source of the build stage must be in the context (else the
     build stops: "no source files were specified");
  3. the tree the build stage configures (`cmake -S DIR`, what the COPYs put
     under DIR) must hold every directory that CMakeLists.txt adds,
     recursively (add_subdirectory), each with its CMakeLists.txt;
  4. with --configure, that tree is written to a temporary directory and
     configured with cmake as the Dockerfile does: a missing source file or
     include fails there too.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import check_dockerfile as cd
import deploylib as dl

DOCKERFILE = os.path.join("infra", "docker", "Dockerfile")
IGNORE = DOCKERFILE + ".dockerignore"
ADD_SUBDIRECTORY = re.compile(r"^\s*add_subdirectory\s*\(\s*\"?([^\s\")]+)", re.M | re.I)


# ---- Docker's ignore rules -------------------------------------------------

def pattern_regex(pattern):
    """A compiled regex for one ignore pattern (a path relative to the context)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):      # "**/" : any number of directories
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                body = pattern[i + 1:j].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def read_ignore(path):
    """[(exclude?, regex, text)] in file order."""
    rules = []
    if not os.path.exists(path):
        return rules
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        text = os.path.normpath(line[1:].strip() if keep else line).lstrip("/")
        rules.append((not keep, pattern_regex(text), text))
    return rules


def ignored(rel, rules):
    """True when the context leaves rel out: the last pattern matching rel or
    one of its parent directories decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for exclude, rx, _ in rules:
        if any(rx.match(p) for p in prefixes):
            out = exclude
    return out


def context_files(root, rules):
    """The files (relative paths) that reach the build."""
    exceptions = [text for exclude, _, text in rules if not exclude]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for d in dirnames:
            rel = rel_dir + d
            # A directory left out is not walked, unless an exception reaches into it.
            if ignored(rel, rules) and not any(e.startswith(rel + "/") for e in exceptions):
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        for f in filenames:
            rel = rel_dir + f
            if not ignored(rel, rules):
                files.append(rel)
    return set(files)


# ---- what the build stage copies --------------------------------------------

def copy_args(args):
    """(sources, destination, from-stage or None) of a COPY instruction."""
    if args.startswith("["):
        import json
        words = json.loads(args)
    else:
        words = args.split()
    stage = None
    while words and words[0].startswith("--"):
        if words[0].startswith("--from="):
            stage = words[0].split("=", 1)[1]
        words = words[1:]
    return words[:-1], words[-1] if words else "", stage


def copied(stage, files, problems):
    """{path in the image: path in the context} of the stage's COPYs from the context."""
    import fnmatch
    workdir, out = "/", {}
    for word, args in stage["instrs"]:
        if word == "WORKDIR":
            workdir = os.path.join(workdir, args.strip())
            continue
        if word not in ("COPY", "ADD"):
            continue
        sources, dest, from_stage = copy_args(args)
        if from_stage:
            continue
        dest = os.path.join(workdir, dest)
        into_dir = dest.endswith("/") or len(sources) > 1
        for src in sources:
            src = os.path.normpath(src).lstrip("/")
            if src == ".":
                matched = sorted(files)
                base = ""
            elif any(ch in src for ch in "*?["):
                matched = sorted(f for f in files if fnmatch.fnmatchcase(f, src)
                                 or any(fnmatch.fnmatchcase(p, src) for p in parents(f)))
                base = None
            else:
                matched = sorted(f for f in files if f == src or f.startswith(src + "/"))
                base = src
            if not matched:
                problems.append("COPY %s: not in the build context (left out by %s, or missing)"
                                % (src, IGNORE))
                continue
            for f in matched:
                if base is not None and f == base:      # a file
                    target = os.path.join(dest, os.path.basename(f)) if into_dir else dest
                elif base is not None:                  # a directory's contents
                    target = os.path.join(dest, os.path.relpath(f, base))
                else:
                    target = os.path.join(dest, os.path.basename(f))
                out[os.path.normpath(target)] = f
    return out


def parents(rel):
    parts = rel.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts))]


def configure_dir(stage):
    """The directory the build stage configures (`cmake -S DIR`), else its WORKDIR."""
    workdir = "/"
    for word, args in stage["instrs"]:
        if word == "WORKDIR":
            workdir = os.path.join(workdir, args.strip())
        if word == "RUN":
            m = re.search(r"cmake\s+(?:[^&;]*\s)?-S\s*(\S+)", args)
            if m:
                return os.path.normpath(os.path.join(workdir, m.group(1)))
    return os.path.normpath(workdir)


# ---- the CMake tree ----------------------------------------------------------

def cmake_directories(root, rel_dir=""):
    """Every directory (relative to root) that the CMake tree adds, recursively."""
    listed = os.path.join(root, rel_dir, "CMakeLists.txt")
    if not os.path.exists(listed):
        return []
    out = []
    for sub in ADD_SUBDIRECTORY.findall(open(listed, encoding="utf-8").read()):
        if "${" in sub:
            continue    # computed: only --configure can follow it
        rel = os.path.normpath(os.path.join(rel_dir, sub))
        out.append(rel)
        out += cmake_directories(root, rel)
    return out


def check_cmake_tree(root, image_files, src_dir, problems):
    in_src = {os.path.relpath(p, src_dir) for p in image_files
              if p == src_dir or p.startswith(src_dir.rstrip("/") + "/")}
    if "CMakeLists.txt" not in in_src:
        problems.append("the build configures %s, but no CMakeLists.txt is copied there" % src_dir)
        return
    for d in cmake_directories(root):
        if os.path.join(d, "CMakeLists.txt") not in in_src:
            problems.append("CMakeLists.txt adds %s, which the image build does not get "
                            "(copy it in %s and let it through %s)" % (d, DOCKERFILE, IGNORE))


def configure(root, image_files, src_dir, problems):
    """cmake on the tree the build stage would have."""
    if shutil.which("cmake") is None:
        problems.append("--configure: no cmake")
        return
    with tempfile.TemporaryDirectory(prefix="deta-context-") as tmp:
        for target, f in image_files.items():
            if target == src_dir or not target.startswith(src_dir.rstrip("/") + "/"):
                continue
            dst = os.path.join(tmp, "src", os.path.relpath(target, src_dir))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(root, f), dst)
        r = subprocess.run(["cmake", "-S", os.path.join(tmp, "src"), "-B", os.path.join(tmp, "build"),
                            "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DDETA_SANITIZE=OFF"],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
            problems.append("cmake does not configure the image's source tree:\n" + tail)


def check(root, run_cmake=False):
    problems = []
    text = open(os.path.join(root, DOCKERFILE), encoding="utf-8").read()
    stages = cd.stages(cd.instructions(text))
    if not stages:
        return ["%s has no FROM" % DOCKERFILE]
    files = context_files(root, read_ignore(os.path.join(root, IGNORE)))
    build = stages[0]
    image_files = copied(build, files, problems)
    src_dir = configure_dir(build)
    check_cmake_tree(root, image_files, src_dir, problems)
    if run_cmake and not problems:
        configure(root, image_files, src_dir, problems)
    return problems


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--configure"]
    root = os.path.abspath(args[0]) if args else dl.REPO
    try:
        found = check(root, "--configure" in sys.argv[1:])
    except Exception as e:
        found = ["%s: %s" % (type(e).__name__, e)]
    sys.exit(dl.report("context", found))
