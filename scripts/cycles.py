#!/usr/bin/env python3
"""Import cycles between the modules of a Rust crate.

    python3 scripts/cycles.py proxy/src extension/src
    python3 scripts/cycles.py --self-test     # the checker finds a known cycle

Every file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`, `lib.rs` the
crate root). An edge A -> B is a path in A's code (a `use` or an inline
path) that starts with `crate::`, `super::`, `self::` or a child module A
declares, and names B or something inside it. Comments and string literals are ignored; inline
modules (`mod tests { … }`) resolve `super::` from where they sit. Strongly
connected components (Tarjan) of more than one module are cycles: each is
printed with the edges that close it, and the exit status is 1.
"""

import re
import sys
from pathlib import Path

TOKEN = re.compile(
    r"""
      (?P<line_comment>//[^\n]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<raw_string>b?r(?P<hashes>\#*)".*?"(?P=hashes))
    | (?P<string>b?"(?:\\.|[^"\\])*")
    | (?P<char>b?'(?:\\.[^']*|[^\\'\n])')
    """,
    re.VERBOSE | re.DOTALL,
)


def strip(text):
    """The code with comments and literals blanked (newlines kept)."""

    def blank(match):
        return re.sub(r"[^\n]", " ", match.group(0))

    return TOKEN.sub(blank, text)


def module_of(root, path):
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["lib"] or parts == ["main"]:
        return ()
    return tuple(parts)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, text):
        depth, start, items = 0, 0, []
        for i, c in enumerate(text):
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "," and depth == 0:
                items.append(text[start:i])
                start = i + 1
        items.append(text[start:])
        for item in filter(None, items):
            brace = item.find("{")
            if brace >= 0 and item.endswith("}"):
                walk(prefix + item[:brace], item[brace + 1 : -1])
            else:
                out.append(prefix + item.split(" as ")[0])

    walk("", tree)
    return out


USE = re.compile(r"\buse\s+([^;]+);")
PATH = re.compile(r"(?<![\w:])(crate|super|self)((?:::\w+)+)")
INLINE_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")
CHILD_MOD = re.compile(r"\bmod\s+(\w+)\s*;")


def paths_in(code):
    """(offset, path) for every module-relative path in `code`; a path that
    starts with a child module declared here (`mod gate;` … `gate::Gate`)
    is read as `self::gate::Gate`."""
    children = set(CHILD_MOD.findall(code))
    relative = re.compile(r"(crate|super|self)::")
    child = re.compile(r"(?<![\w:])(%s)((?:::\w+)+)" % "|".join(children)) if children else None
    found = []
    spans = []
    for m in USE.finditer(code):
        spans.append(m.span())
        for path in expand_use(m.group(1)):
            if relative.match(path):
                found.append((m.start(), path))
            elif path.split("::")[0] in children:
                found.append((m.start(), "self::" + path))
    for m in PATH.finditer(code):
        if not any(a <= m.start() < b for a, b in spans):
            found.append((m.start(), m.group(0)))
    if child:
        for m in child.finditer(code):
            if not any(a <= m.start() < b for a, b in spans):
                found.append((m.start(), "self::" + m.group(0)))
    return found


def inline_module_at(code, offset):
    """Names of the inline modules enclosing `offset`, outermost first."""
    stack = []  # (name, depth at which it closes)
    depth = 0
    pending = {m.end() - 1: m.group(1) for m in INLINE_MOD.finditer(code)}
    for i, c in enumerate(code[:offset]):
        if c == "{":
            if i in pending:
                stack.append((pending[i], depth))
            depth += 1
        elif c == "}":
            depth -= 1
            if stack and stack[-1][1] == depth:
                stack.pop()
    return [name for name, _ in stack]


def resolve(path, here, modules):
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    else:  # self, or super (possibly repeated)
        base, rest = tuple(here), parts
        if rest[0] == "self":
            rest = rest[1:]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    target = base
    for part in rest:
        if target + (part,) not in modules:
            break
        target = target + (part,)
    return target


def graph(root):
    root = Path(root)
    files = {module_of(root, p): p for p in root.rglob("*.rs")}
    modules = set(files)
    edges = {m: {} for m in modules}
    for module, path in files.items():
        code = strip(path.read_text())
        for offset, p in paths_in(code):
            here = module + tuple(inline_module_at(code, offset))
            target = resolve(p, here, modules)
            # Inline modules belong to their file.
            while target not in modules:
                target = target[:-1]
            if target != module:
                line = code.count("\n", 0, offset) + 1
                edges[module].setdefault(target, f"{path}:{line}")
    return edges


def tarjan(edges):
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            out.append(component)

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(module):
    return "crate::" + "::".join(module) if module else "crate"


def main(roots):
    failed = False
    for root in roots:
        edges = graph(root)
        cycles = 0
        for component in tarjan(edges):
            if len(component) < 2:
                continue
            cycles += 1
            members = set(component)
            print(f"{root}: cycle of {len(component)} modules:")
            for a in sorted(component):
                for b, where in sorted(edges[a].items()):
                    if b in members:
                        print(f"  {name(a)} -> {name(b)}  ({where})")
        if cycles == 0:
            print(f"{root}: {len(edges)} modules, no import cycles")
        failed = failed or cycles > 0
    return 1 if failed else 0


SELF_TEST = {
    "lib.rs": "mod a;\nmod b;\n// use crate::a::X; (a comment is no edge)\n",
    "a.rs": 'use crate::b::{c::Thing, Other};\nconst S: &str = "crate::lib::x";\n',
    "b/mod.rs": "pub mod c;\npub struct Other;\nfn f() { let _ = c::make(); }\n",
    "b/c.rs": "pub struct Thing;\npub fn make() -> super::Other { crate::a::helper() }\n"
    "#[cfg(test)]\nmod tests { use super::*; }\n",
}


def self_test():
    """A crate with the cycle a -> b::c -> a (and b <-> b::c): found, with
    comments and strings ignored."""
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        for name, text in SELF_TEST.items():
            path = Path(root) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        edges = graph(root)
        cycles = [sorted(c) for c in tarjan(edges) if len(c) > 1]
        expected = [[("a",), ("b",), ("b", "c")]]
        assert cycles == expected, cycles
        # `crate::lib::x` in a string and `crate::a::X` in a comment are no edges.
        assert () not in edges[("a",)] and ("a",) not in edges[()], edges
    print("cycles.py self-test: ok")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(main(sys.argv[1:] or ["proxy/src", "extension/src"]))
