#!/usr/bin/env python3
"""layers.py [--graph] [SRC]: check the layering of proxify-shim (default proxify-shim/src).

Every module belongs to one layer, by its first path component:

    L0 sys      the real libc functions, addresses, lock, guard, errors, socket helpers
    L1 state    fd table, placeholder table, hosts cache, runtime (config, proxies, logger)
    L2 policy   decide
    L3 engine   blocking / non-blocking connect, UDP association, BIND
    L4 hooks    the exported extern "C" functions
    L5 (root)   lib.rs: the constructor and the fork handlers

Fails (exit 1) when
  - a module has no layer (a new top-level module must be given one here),
  - a module imports a module of a higher layer (`use crate::...`, `super::...`, or an inline
    `crate::a::b` path; test modules are not counted),
  - the module graph has a cycle (within a layer too),
  - a module other than sys/real.rs calls a libc function that proxify hooks (`libc::connect(`
    would enter proxify's own hook: the shim reaches the real ones through `real::` only).

Also fails when a `*.rs` file of proxify-core, proxify-shim, proxify-cli or proxify-supervise
(their src/) is longer than SIZE_LIMIT lines and its leading `//!` module doc has no line
beginning `//! Size:` saying why (a file without a `//!` doc, such as a tests file: a
`// Size:` line in its leading `//` comment block). PENDING_SIZE_NOTES is the only exception.

--graph prints every module with its layer, line count and imports.
--self-test checks that the checker fails on an upward import, a cycle, a hooked call and a
long file without a Size: note.
"""
import re
import sys
import tempfile
from pathlib import Path

LAYERS = {"sys": 0, "state": 1, "policy": 2, "engine": 3, "hooks": 4, "": 5}
NAMES = {0: "L0 sys", 1: "L1 state", 2: "L2 policy", 3: "L3 engine", 4: "L4 hooks", 5: "L5 root"}


def modules(src):
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("lib", "mod"):
            parts = parts[:-1]
        mods["::".join(parts)] = f
    return mods


def strip(text):
    """The text without comments, string contents and `#[cfg(test)] mod x { ... }` blocks."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    while True:
        t = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
        if not t:
            return text
        depth, j = 0, t.end() - 1
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        text = text[: t.start()] + text[j:]


def expand(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"] (aliases and globs dropped)."""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    head, body = tree[:i], tree[i + 1 : tree.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it.strip():
            for p in expand(it):
                out.append((head + p) if p != "self" else head.rstrip(":"))
    return out


def imports(m, text):
    """Module paths (relative to the crate root) that module `m` refers to."""
    parent = m.split("::")[:-1]
    paths = []
    for u in re.finditer(r"\buse\s+((?:crate|super)::[^;]*);", text, flags=re.S):
        paths += expand(u.group(1))
    text = re.sub(r"\buse\s+[^;]*;", "", text, flags=re.S)
    paths += re.findall(r"\b((?:crate|super)::(?:\w+::)*\w+)", text)
    out = []
    for p in paths:
        p = p.replace(" ", "").replace("\n", "")
        if p.startswith("crate::"):
            out.append(p[len("crate::") :])
        elif p.startswith("super::"):
            rest = p[len("super::") :]
            out.append("::".join(parent + [rest]) if parent else rest)
    return out


def resolve(path, names):
    for n in names:
        if n and (path == n or path.startswith(n + "::")):
            return n
    return None


def layer(m):
    return LAYERS.get(m.split("::")[0])


def hooked(src, mods):
    names = set()
    for f in mods.values():
        names |= set(re.findall(r'#\[no_mangle\]\s*pub\s+unsafe\s+extern\s+"C"\s+fn\s+(\w+)', f.read_text()))
    real = src / "sys" / "real.rs"
    if real.exists():
        t = real.read_text()
        for a, sym in re.findall(r'\bfn\s+(\w+)\s*=\s*"(\w+)"', t):
            names |= {a, sym}
    names |= {"fcntl", "fcntl64", "syscall", "execl", "execlp", "execle"}
    names.discard("proxify_fcntl")
    names.discard("proxify_syscall")
    return names


# Hooks the libc crate has no binding for (so clippy.toml cannot name them; the libc:: call
# check above still covers them).
NOT_IN_LIBC_CRATE = {"__poll_chk", "__ppoll_chk", "closefrom", "getaddrinfo_a", "gethostbyaddr",
                     "gethostbyaddr_r", "gethostbyname", "gethostbyname2", "gethostbyname2_r",
                     "gethostbyname_r"}


def clippy_in_step(src, mods):
    """Every exported hook is in proxify-shim/clippy.toml's disallowed-methods (or has no
    binding in the libc crate): the list is a copy, and this keeps it from drifting."""
    conf = src.parent / "clippy.toml"
    if not conf.exists():
        return []
    listed = set(re.findall(r'"libc::(\w+)"', conf.read_text()))
    hooks = set()
    for f in mods.values():
        hooks |= set(re.findall(r'#\[no_mangle\]\s*pub\s+unsafe\s+extern\s+"C"\s+fn\s+(\w+)', f.read_text()))
    missing = sorted(h for h in hooks - listed - NOT_IN_LIBC_CRATE if not h.startswith("proxify_"))
    return [f"clippy.toml: hook {h} is not in disallowed-methods (add libc::{h})" for h in missing]


def check(src, graph=False):
    mods = modules(src)
    names = sorted(mods, key=len, reverse=True)
    edges = {m: set() for m in mods}
    problems = []
    calls = hooked(src, mods)
    problems += clippy_in_step(src, mods)
    for m, f in mods.items():
        if layer(m) is None:
            problems.append(f"{m}: no layer (give its top-level directory one in scripts/layers.py)")
            continue
        text = strip(f.read_text())
        for p in imports(m, text):
            t = resolve(p, names)
            if t and t != m and not m.startswith(t + "::") and t != "":
                edges[m].add(t)
        if f.relative_to(src).as_posix() != "sys/real.rs":
            for c in re.findall(r"\blibc::(\w+)\s*\(", text):
                if c in calls:
                    problems.append(f"{m}: calls libc::{c} (proxify hooks it; use real::{c})")
    for m in mods:
        for t in sorted(edges[m]):
            lm, lt = layer(m), layer(t)
            if lm is not None and lt is not None and lt > lm:
                problems.append(f"{m} ({NAMES[lm]}) imports {t} ({NAMES[lt]}): an import pointing up")
    # Tarjan's strongly connected components
    index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = i[0]
        i[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for c in sccs:
        problems.append("cycle: " + " ".join(c))
    if graph:
        per = {}
        for m, f in sorted(mods.items(), key=lambda x: (layer(x[0]) if layer(x[0]) is not None else 9, x[0])):
            n = len(f.read_text().splitlines())
            lm = layer(m)
            per[lm] = per.get(lm, 0) + n
            print(f"{NAMES.get(lm, '??'):10} {m or '(root)':22} {n:5}  -> {' '.join(sorted(edges[m]))}")
        print("lines per layer: " + ", ".join(f"{NAMES[k]} {v}" for k, v in sorted(per.items(), key=lambda x: (x[0] is None, x[0]))))
    return problems


SIZE_LIMIT = 550
SIZE_DIRS = ["proxify-core/src", "proxify-shim/src", "proxify-cli/src", "proxify-supervise/src"]

# TEMPORARY: files over SIZE_LIMIT allowed without a Size: note, each with why. This list is the
# only escape from the size check; an entry that is no longer needed fails the check (remove it).
PENDING_SIZE_NOTES: set = set()


def size_note(text):
    """(whether the file has a leading `//!` doc, the reason its `//! Size:` line gives, or
    None). The leading block: the lines before the first one that is not blank, a `//` comment
    or an inner attribute (`#![...]`); without a `//!` line in it, the note is `// Size:`."""
    block = []
    for line in text.splitlines():
        t = line.strip()
        if t.startswith("//"):
            block.append(t)
        elif t and not t.startswith("#!["):
            break
    doc = any(t.startswith("//!") for t in block)
    for t in block:
        m = re.match(r"//! Size:(.*)" if doc else r"// Size:(.*)", t)
        if m and m.group(1).strip():
            return doc, m.group(1).strip()
    return doc, None


def size_check(root, dirs=SIZE_DIRS, pending=PENDING_SIZE_NOTES):
    """(problems, how many long files carry a note)."""
    problems, noted = [], 0
    for d in dirs:
        for f in sorted((root / d).rglob("*.rs")):
            rel = f.relative_to(root).as_posix()
            text = f.read_text()
            n = len(text.splitlines())
            doc, note = size_note(text)
            if rel in pending:
                if n <= SIZE_LIMIT or note:
                    why = "has a Size: note" if note else f"is {n} lines"
                    problems.append(f"{rel}: {why}: remove it from PENDING_SIZE_NOTES in scripts/layers.py")
                continue
            if n > SIZE_LIMIT:
                if note:
                    noted += 1
                else:
                    kind = "`//! Size:` line in its leading module doc" if doc else "`// Size:` line in its leading comment"
                    problems.append(f"{rel}: {n} lines (over {SIZE_LIMIT}) and no {kind} saying why")
    for rel in sorted(pending):
        if not (root / rel).exists():
            problems.append(f"{rel}: does not exist: remove it from PENDING_SIZE_NOTES in scripts/layers.py")
    return problems, noted


def size_self_test():
    long = "fn f() {}\n" * (SIZE_LIMIT + 1)
    bad = {
        "no note": {"a/x.rs": "//! A module.\n" + long},
        "note in the body": {"a/x.rs": "//! A module.\n\nfn g() {}\n//! Size: too late\n" + long},
        "plain // Size: under a //! doc": {"a/x.rs": "// Size: wrong kind\n//! A module.\n" + long},
        "empty reason": {"a/x.rs": "//! A module.\n//! Size:\n" + long},
        "tests file without a note": {"a/tests.rs": "use super::*;\n" + long},
        "pending entry no longer long": {"a/p.rs": "//! Short.\n"},
        "pending entry missing": {"a/p.rs": None},
    }
    good = {
        "//! Size: note": {"a/x.rs": "//! A module.\n//!\n//! Size: one table and its tests.\n\nuse x;\n" + long},
        "// Size: in a tests file": {"a/tests.rs": "// Tests of x.\n// Size: forty cases.\nuse super::*;\n" + long},
        "attributes first": {"a/main.rs": "#![no_main]\n// why\n#![allow(x)]\n//! Main.\n//! Size: why.\n" + long},
        "short file": {"a/y.rs": "fn f() {}\n"},
        "pending entry": {},
    }
    ok = True
    for expect, cases in ((True, bad), (False, good)):
        for name, files in cases.items():
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "a").mkdir()
                for p, t in {"a/p.rs": long, **files}.items():
                    if t is not None:
                        (Path(d) / p).write_text(t)
                problems, _ = size_check(Path(d), ["a"], {"a/p.rs"})
                if bool(problems) != expect:
                    print(f"layers self-test: size check, {name}: " + ("missed" if expect else f"failed: {problems}"))
                    ok = False
    return ok


def self_test():
    cases = {
        "upward import": {"sys/mod.rs": "pub mod a;", "sys/a.rs": "use crate::state::b;", "state/mod.rs": "pub mod b;", "state/b.rs": ""},
        "cycle": {"state/mod.rs": "pub mod a; pub mod b;", "state/a.rs": "use super::b;", "state/b.rs": "fn f() { crate::state::a::g() }"},
        "hooked call": {"sys/mod.rs": "pub mod real;", "sys/real.rs": 'real_fns! { fn getsockname = "getsockname"(fd: c_int) -> c_int; }', "engine/mod.rs": "pub mod x;", "engine/x.rs": "fn f() { unsafe { libc::getsockname(0, p, q) }; }"},
        "no layer": {"misc.rs": ""},
        "nested use": {"sys/mod.rs": "pub mod a;", "sys/a.rs": "use crate::{policy::{decide as d}, x};", "policy/mod.rs": "pub mod decide;", "policy/decide.rs": ""},
    }
    ok = True
    for name, files in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for p, t in {"lib.rs": "", **files}.items():
                (Path(d) / p).parent.mkdir(parents=True, exist_ok=True)
                (Path(d) / p).write_text(t)
            if not check(Path(d)):
                print(f"layers self-test: the checker missed: {name}")
                ok = False
    clean = {"lib.rs": "mod sys; mod hooks;", "sys/mod.rs": "pub mod a;", "sys/a.rs": "", "hooks/mod.rs": "pub mod h;", "hooks/h.rs": "use crate::sys::a;\n// crate::hooks::nothing\n#[cfg(test)]\nmod tests { use crate::hooks::h; }"}
    with tempfile.TemporaryDirectory() as d:
        for p, t in clean.items():
            (Path(d) / p).parent.mkdir(parents=True, exist_ok=True)
            (Path(d) / p).write_text(t)
        if check(Path(d)):
            print("layers self-test: a clean tree failed:", check(Path(d)))
            ok = False
    return size_self_test() and ok


def main():
    args = sys.argv[1:]
    if "--self-test" in args:
        sys.exit(0 if self_test() else 1)
    graph = "--graph" in args
    args = [a for a in args if a != "--graph"]
    src = Path(args[0] if args else Path(__file__).resolve().parent.parent / "proxify-shim" / "src")
    problems = check(src, graph)
    size_problems, noted = size_check(Path(__file__).resolve().parent.parent)
    problems += size_problems
    for p in problems:
        print("layers:", p)
    if problems:
        print(f"layers: {len(problems)} problem(s) in {src}")
        sys.exit(1)
    print(f"layers: ok ({len(modules(src))} modules, imports point down, no cycle, no hooked libc call; {noted} files over {SIZE_LIMIT} lines, each with a Size: note)")


if __name__ == "__main__":
    main()
