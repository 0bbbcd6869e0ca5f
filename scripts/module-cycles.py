#!/usr/bin/env python3
"""No import cycle between the edge library's module files (issue 13).

Reads every file under src/ (the edge library; main.rs and lib.rs, the
composition root and the map, are left out), takes the `crate::` and
`super::` paths its non-test code names, resolves each to the module file
that defines it (src/a/b.rs for crate::a::b::Item), and looks for cycles.
A module and its own submodules may name each other (a child uses its
parent's items; the parent declares the child); a re-export through a parent
counts as the parent. Comments are ignored (doc links are not imports).

  python3 scripts/module-cycles.py [src]

Prints each cycle and exits 1 when there is one; exits 0 with "no cycle".
"""

import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
PATH = re.compile(r"\b(crate|super)::((?:[a-z_0-9]+::)*)(\{[^}]*\}|[A-Za-z_0-9]+)")


def module_files():
    files = {}
    for directory, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "mod":
                    parts = parts[:-1]
                files[tuple(parts)] = path
    return files


def code_of(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = text.split("#[cfg(test)]")[0]
    return re.sub(r"//[^\n]*", "", text)


def named_paths(module, text):
    """Every path (a list of segments from the crate root) `text` names."""
    for m in PATH.finditer(text):
        base = [] if m.group(1) == "crate" else list(module[:-1])
        base += [s for s in m.group(2).split("::") if s]
        tail = m.group(3)
        if tail.startswith("{"):
            for item in tail[1:-1].split(","):
                yield base + [s for s in item.strip().split("::") if s and s != "self"]
        else:
            yield base + [tail]


def main():
    files = module_files()

    def resolve(segments):
        for n in range(len(segments), 0, -1):
            if tuple(segments[:n]) in files:
                return tuple(segments[:n])
        return None

    def related(a, b):
        return a[:len(b)] == b or b[:len(a)] == a

    edges = {}
    for module, path in files.items():
        if module in (("main",), ("lib",)):
            continue
        for segments in named_paths(module, code_of(path)):
            target = resolve(segments)
            if target and not related(module, target):
                edges.setdefault(module, set()).add(target)

    # Tarjan's strongly connected components.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(component)

    for v in sorted(files):
        if v not in index:
            visit(v)
    for component in cycles:
        names = sorted("/".join(m) + ".rs" for m in component)
        print("module-cycles: cycle between " + ", ".join(names))
        for a in sorted(component):
            for b in sorted(edges.get(a, ())):
                if b in component:
                    print(f"  {'/'.join(a)}.rs names {'/'.join(b)}")
    if cycles:
        sys.exit(1)
    print(f"module-cycles: no cycle between {len(files)} module files under {ROOT}")


if __name__ == "__main__":
    main()
