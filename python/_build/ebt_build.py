"""A PEP 517 build backend for the ebt package, in the standard library only,
so that `pip install ./python` needs nothing from an index (pip's isolated
build environment stays empty: `requires = []` in pyproject.toml).

The wheel holds ebt/*.py and, when a built library is found ($EBT_LIB at
build time, else ../build/libebt.so.0 next to this directory), a copy of it
as ebt/libebt.so.0, which ebt._lib finds first after $EBT_LIB; then the
wheel is tagged for this platform. An editable install (pip install -e)
puts this directory on sys.path with a .pth file instead.
"""
import base64
import hashlib
import io
import os
import re
import sysconfig
import tarfile
import zipfile

try:
    import tomllib
except ImportError:              # Python < 3.11: the few fields are read with a regex
    tomllib = None

SONAME = "libebt.so.0"


def _root():
    return os.getcwd()           # PEP 517: hooks run in the source tree


def _project():
    text = open(os.path.join(_root(), "pyproject.toml"), encoding="utf-8").read()
    if tomllib:
        p = tomllib.loads(text)["project"]
    else:
        def get(key):
            m = re.search(r'^%s\s*=\s*"([^"]*)"' % key, text, re.M)
            return m.group(1) if m else ""
        p = {"name": get("name"), "description": get("description"), "requires-python": get("requires-python"),
             "dependencies": ["numpy"], "optional-dependencies": {"torch": ["torch"]}}
    init = open(os.path.join(_root(), "ebt", "__init__.py"), encoding="utf-8").read()
    p["version"] = re.search(r'^__version__ = "([^"]+)"', init, re.M).group(1)
    return p


def _metadata(p):
    lines = ["Metadata-Version: 2.1", "Name: " + p["name"], "Version: " + p["version"],
             "Summary: " + p.get("description", ""), "License: MIT",
             "Requires-Python: " + p.get("requires-python", "")]
    lines += ["Requires-Dist: " + d for d in p.get("dependencies", [])]
    for extra, deps in p.get("optional-dependencies", {}).items():
        lines.append("Provides-Extra: " + extra)
        lines += ['Requires-Dist: %s; extra == "%s"' % (d, extra) for d in deps]
    return "\n".join(lines) + "\n"


def _library():
    env = os.environ.get("EBT_LIB")
    if env:
        path = os.path.join(env, SONAME) if os.path.isdir(env) else env
    else:
        path = os.path.join(_root(), "..", "build", SONAME)
    return os.path.realpath(path) if os.path.isfile(path) else None


class _Wheel:
    def __init__(self, directory, name, version, tag):
        self.dist = "%s-%s.dist-info" % (name, version)
        self.filename = "%s-%s-%s.whl" % (name, version, tag)
        self.zf = zipfile.ZipFile(os.path.join(directory, self.filename), "w", zipfile.ZIP_DEFLATED)
        self.record = []

    def add(self, arcname, data, mode=0o644):
        info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zf.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    def close(self, p, tag, purelib):
        self.add(self.dist + "/METADATA", _metadata(p).encode())
        self.add(self.dist + "/WHEEL", ("Wheel-Version: 1.0\nGenerator: ebt_build\nRoot-Is-Purelib: %s\nTag: %s\n"
                                        % ("true" if purelib else "false", tag)).encode())
        self.add(self.dist + "/top_level.txt", b"ebt\n")
        self.record.append(self.dist + "/RECORD,,")
        self.zf.writestr(self.dist + "/RECORD", "\n".join(self.record) + "\n")
        self.zf.close()
        return self.filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    lib = _library()
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    tag = "py3-none-" + platform if lib else "py3-none-any"
    w = _Wheel(wheel_directory, p["name"], p["version"], tag)
    pkg = os.path.join(_root(), "ebt")
    for f in sorted(os.listdir(pkg)):
        if f.endswith(".py"):
            with open(os.path.join(pkg, f), "rb") as fh:
                w.add("ebt/" + f, fh.read())
    if lib:
        with open(lib, "rb") as fh:
            w.add("ebt/" + SONAME, fh.read(), 0o755)
    return w.close(p, tag, purelib=not lib)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    w = _Wheel(wheel_directory, p["name"], p["version"], "py3-none-any")
    w.add("__editable__.ebt.pth", (os.path.abspath(_root()) + "\n").encode())
    return w.close(p, "py3-none-any", purelib=True)


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = "%s-%s" % (p["name"], p["version"])
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for d, _, files in os.walk(_root()):
            rel = os.path.relpath(d, _root())
            if "__pycache__" in rel.split(os.sep):
                continue
            for f in sorted(files):
                if not f.endswith((".py", ".toml", ".md")):
                    continue
                tf.add(os.path.join(d, f), os.path.normpath(os.path.join(base, rel, f)))
        info = tarfile.TarInfo(base + "/PKG-INFO")
        data = _metadata(p).encode()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return os.path.basename(path)
