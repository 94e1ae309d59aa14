"""The ctypes mirrors (ebt/_structs.py) against the C compiler: sizeof,
alignment and every field's offset and size, in the float and the double
build, and the field names against ebt.h (so a field added to ebt.h and not
to the mirror fails here, even where padding would hide it)."""
import ctypes
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO
from ebt import _structs as S

CC = os.environ.get("CC", "cc")


def header_structs():
    """{typedef name: [field names]} of the typedef'd structs of ebt.h."""
    text = open(os.path.join(REPO, "ebt.h")).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    out = {}
    for body, name in re.findall(r"typedef\s+struct\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        fields = []
        for decl in body.split(";"):
            if decl.strip():
                fields += [re.findall(r"\w+", piece)[-1] for piece in decl.split(",")]
        out[name] = fields
    return out


def c_layout(tmp_path, double):
    """{(struct, field or None): (offset or alignment, size)} printed by a C program."""
    structs = S.structs(ctypes.c_double if double else ctypes.c_float)
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "ebt.h"', "int main(void) {"]
    for cname, mirror in structs.items():
        lines.append('printf("%s - %%zu %%zu\\n", offsetof(struct { char c; %s t; }, t), sizeof(%s));'
                     % (cname, cname, cname))
        for f, _ in mirror._fields_:
            lines.append('printf("%s %s %%zu %%zu\\n", offsetof(%s, %s), sizeof(((%s *)0)->%s));'
                         % (cname, f, cname, f, cname, f))
    lines.append("return 0; }")
    src, exe = tmp_path / "layout.c", tmp_path / ("layout_d" if double else "layout_f")
    src.write_text("\n".join(lines) + "\n")
    cmd = [CC, "-std=c99", "-Wall", "-Werror", "-I", REPO, str(src), "-o", str(exe)] + (["-DEBT_DOUBLE"] if double else [])
    subprocess.run(cmd, check=True)
    out = subprocess.run([str(exe)], check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    layout = {}
    for line in out.splitlines():
        s, f, a, b = line.split()
        layout[(s, None if f == "-" else f)] = (int(a), int(b))
    return layout


def test_field_names_match_header():
    h = header_structs()
    for cname, mirror in S.structs(ctypes.c_float).items():
        assert cname in h, cname
        assert [f for f, _ in mirror._fields_] == h[cname], "mirror of %s out of date with ebt.h" % cname
    # every public struct of ebt.h is mirrored
    assert set(h) == set(S.structs(ctypes.c_float))


@pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler (%s)" % CC)
@pytest.mark.parametrize("double", [False, True], ids=["float", "double"])
def test_layout_matches_compiler(tmp_path, double):
    layout = c_layout(tmp_path, double)
    for cname, mirror in S.structs(ctypes.c_double if double else ctypes.c_float).items():
        assert layout[(cname, None)] == (ctypes.alignment(mirror), ctypes.sizeof(mirror)), cname
        for f, _ in mirror._fields_:
            d = getattr(mirror, f)
            assert layout[(cname, f)] == (d.offset, d.size), "%s.%s" % (cname, f)


def header_enums():
    """{typedef name: [enumerator names]} of ebt.h, in order."""
    text = re.sub(r"/\*.*?\*/", " ", open(os.path.join(REPO, "ebt.h")).read(), flags=re.S)
    return {name: re.findall(r"(EBT_\w+)", body)
            for body, name in re.findall(r"typedef\s+enum\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S)}


def test_enums_match_header():
    from ebt import errors
    e = header_enums()
    assert tuple(e["ebt_status"]) == S.STATUS_NAMES
    assert e["ebt_arch"] == ["EBT_ARCH_EBT", "EBT_ARCH_TRANSFORMER"] and list(S.ARCHS.values()) == [0, 1]
    assert e["ebt_mode"] == ["EBT_MODE_" + m.upper() for m in S.MODES] and list(S.MODES.values()) == [0, 1, 2]
    import ebt._lib as L
    for code in range(1, len(S.STATUS_NAMES)):
        assert errors.BY_STATUS[code].name == S.STATUS_NAMES[code]
        assert errors.DESCRIPTIONS[code] == L.LIB.ebt_status_str(code).decode()
    m = re.search(r"#define EBT_TRAIN_NSUMS (\d+)", open(os.path.join(REPO, "ebt.h")).read())
    assert int(m.group(1)) == S.TRAIN_NSUMS
