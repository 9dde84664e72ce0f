#!/usr/bin/env python3
"""Finds and removes exactly the images a benchmark made, on an engine others share.

    own_images.py snapshot FILE
        Writes the id of every image the engine holds (intermediate ones too) into FILE.

    own_images.py remove [--dry-run] BEFORE ANCHOR [STEP...]
        Removes the images that are not in BEFORE (a snapshot taken when the benchmark started)
        and whose whole chain, from the image up to its root, is made of build steps of the
        benchmark's own Dockerfile: each image's ContainerConfig.Cmd must contain ANCHOR or one
        of the STEPs, and one image of the chain must contain ANCHOR (a step no one else's
        Dockerfile has, such as a COPY to a unique path, or the first step of the demo's).
        Children go before parents, each with `docker rmi --no-prune`, so an image someone
        tagged or a container uses in the meantime is left alone (said on stderr). Prints one
        line per image it removed.

The images a `bottle build` leaves are the intermediate layers of its guest's Dockerfile (the
build cache): bottle removes the image it built once it has saved it, and writes the bundle
image without the engine. Those layers carry no label, hence the chain test.
"""

import json
import subprocess
import sys


def all_ids():
    out = subprocess.run(
        ["docker", "images", "-aq", "--no-trunc"], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


def inspect(ids):
    if not ids:
        return {}
    r = subprocess.run(["docker", "image", "inspect", *sorted(ids)], capture_output=True, text=True)
    # An image removed since it was listed makes inspect fail for it alone; keep the rest.
    try:
        found = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        found = []
    return {i["Id"]: i for i in found}


def cmd_of(image):
    cmd = (image.get("ContainerConfig") or {}).get("Cmd") or []
    return " ".join(cmd)


def main(argv):
    if len(argv) == 2 and argv[0] == "snapshot":
        with open(argv[1], "w") as f:
            f.write("\n".join(sorted(all_ids())) + "\n")
        return 0
    dry = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    if len(argv) < 3 or argv[0] != "remove":
        print(__doc__, file=sys.stderr)
        return 2
    before = set(open(argv[1]).read().split())
    anchor, steps = argv[2], argv[3:]
    new = all_ids() - before
    images = inspect(new)
    # Parents of new images may be older; inspect them too to walk each chain to its root.
    known = dict(images)
    frontier = {i.get("Parent") for i in images.values()} - {None, ""} - set(known)
    while frontier:
        got = inspect(frontier)
        known.update(got)
        frontier = {i.get("Parent") for i in got.values()} - {None, ""} - set(known)

    def chain(iid):
        out = []
        while iid:
            img = known.get(iid)
            if img is None:
                return None  # a parent we cannot see: not ours to judge
            out.append(img)
            iid = img.get("Parent")
        return out

    ours = []
    for iid in images:
        c = chain(iid)
        if not c:
            continue
        cmds = [cmd_of(i) for i in c]
        if all(anchor in x or any(s in x for s in steps) for x in cmds) and any(anchor in x for x in cmds):
            ours.append((len(c), iid))
    for _, iid in sorted(ours, reverse=True):  # deepest (children) first
        if known[iid].get("RepoTags"):
            print(f"own_images: leaving {iid[:19]}: tagged {known[iid]['RepoTags']}", file=sys.stderr)
            continue
        if dry:
            print(iid)
            continue
        r = subprocess.run(["docker", "rmi", "--no-prune", iid], capture_output=True, text=True)
        if r.returncode == 0:
            print(iid)
        else:
            print(f"own_images: could not remove {iid[:19]}: {r.stderr.strip()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
