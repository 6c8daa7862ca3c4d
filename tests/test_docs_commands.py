"""Every ``python tools/<tool>.py ...`` command written in README.md and docs/*.md uses flags the tool defines.

The commands are extracted from the Markdown (code blocks and inline code; backslash continuations joined; optional
``[--flag=...]`` parts included), and their flag names are compared with the flags each tool defines, read from the
tool's own ``--helpfull`` listing (one subprocess per tool, not per command).
"""
import glob
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
_CMD = re.compile(r"python3?\s+tools/(\w+)\.py\b")
_HELP_FLAG = re.compile(r"^\s+(?:-(\w),)?--(\[no\])?([\w.-]+):", re.M)


def doc_commands():
    """-> [(doc, line number, tool, [flag names])] for every tool command in the docs."""
    out = []
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        i = 0
        while i < len(lines):
            start, text = i, lines[i]
            while text.rstrip().endswith("\\") and i + 1 < len(lines):   # shell line continuation
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i]
            i += 1
            for m in _CMD.finditer(text):
                rest = text[m.end():]
                if "`" in text[:m.start()] and "`" in rest:    # inline code: the command ends at the backtick
                    rest = rest[:rest.index("`")]
                rest = re.split(r"\s#", rest)[0]               # shell comment
                flags = []
                for tok in rest.replace("[", " ").replace("]", " ").split():
                    if tok.startswith("-") and tok.strip("-") and not tok.startswith("-->"):
                        flags.append(tok.lstrip("-").split("=")[0])
                out.append((doc, start + 1, m.group(1), flags))
    return out


def _run_tool(tool, *args):
    path = os.path.join(ROOT, "tools", tool + ".py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, path, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return r.stdout + r.stderr


def tool_flags(tool):
    """``(names, dashes_ok)``: the flag names the tool accepts (long names, ``no``-prefixed booleans, short names)
    from its ``--helpfull`` listing, and whether it also accepts the original's dashed spellings (``--foo-bar`` for
    ``--foo_bar``). The latter is probed with absl's own ``--only_check_args`` written as ``--only-check-args``
    (parse the flags and exit): absl rejects it unless the tool normalises its argv."""
    text = _run_tool(tool, "--helpfull")
    names = set()
    for short, neg, name in _HELP_FLAG.findall(text):
        names.add(name)
        if short:
            names.add(short)
        if neg:
            names.add("no" + name)
    assert names, f"tools/{tool}.py --helpfull listed no flags: {text[-2000:]}"
    probe = _run_tool(tool, "--only-check-args")
    return names, "Unknown command line flag 'only-check-args'" not in probe


def _accepts(flag, defined):
    names, dashes_ok = defined
    if flag in names:
        return True
    if dashes_ok:
        flag = "no" + flag[3:] if flag.startswith("no-") else flag
        return flag.replace("-", "_") in names
    return False


@pytest.fixture(scope="module")
def commands_and_flags():
    cmds = doc_commands()
    tools = sorted({t for _, _, t, _ in cmds if os.path.isfile(os.path.join(ROOT, "tools", t + ".py"))})
    with ThreadPoolExecutor(max_workers=2) as ex:
        defined = dict(zip(tools, ex.map(tool_flags, tools)))
    return cmds, defined


def test_extraction_finds_the_commands():
    cmds = doc_commands()
    tools = {t for _, _, t, _ in cmds}
    assert {"train", "dataset_tool", "gen_images", "calc_metrics"} <= tools, tools
    # backslash continuations and optional [--flag] parts are part of the command
    flags = {(d, t): f for d, _, t, f in cmds}
    assert any("class" in f for (d, t), f in flags.items() if t == "gen_images"), flags


def test_every_documented_tool_exists(commands_and_flags):
    cmds, _ = commands_and_flags
    missing = sorted({f"{d}:{n}: tools/{t}.py" for d, n, t, _ in cmds
                      if not os.path.isfile(os.path.join(ROOT, "tools", t + ".py"))})
    assert not missing, "documented tools that do not exist:\n" + "\n".join(missing)


def test_every_documented_flag_exists(commands_and_flags):
    cmds, defined = commands_and_flags
    bad = [f"{d}:{n}: tools/{t}.py --{f}" for d, n, t, flags in cmds if t in defined
           for f in flags if not _accepts(f, defined[t])]
    assert not bad, "flags used in the docs that the tool does not define:\n" + "\n".join(bad)


def test_check_rejects_unknown_flags(commands_and_flags):
    """The comparison can fail: a made-up flag, and a dashed spelling for a tool that does not normalise its argv."""
    _, defined = commands_and_flags
    for tool, d in defined.items():
        assert not _accepts("surely-not-a-flag", d) and not _accepts("surely_not_a_flag", d), tool
    strict = [t for t, (_, dashes_ok) in defined.items() if not dashes_ok]
    for tool in strict:
        underscored = sorted(n for n in defined[tool][0] if "_" in n and not n.startswith("no"))
        if underscored:
            assert not _accepts(underscored[0].replace("_", "-"), defined[tool]), tool
