#!/usr/bin/env python3
"""Exit 0 (printing its path) if a libclang that bindgen can use loads on this machine, else exit 1.

bindgen (through clang-sys) opens libclang.so, libclang-N.so, libclang.so.N or libclang-N.so.N from
$LIBCLANG_PATH, `llvm-config --libdir`, the LLVM install directories and the linker's search path.
This script looks in the same places and proves a candidate by loading it and finding libclang's C
API entry point (clang_createIndex), so a file that only looks like one (libclang-cpp.so.14, a
dangling link, a library for another architecture) does not count.
"""
import ctypes
import glob
import os
import re
import subprocess
import sys

NAME = re.compile(r"^libclang(-[0-9][0-9.]*)?\.so(\.[0-9][0-9.]*)?$")


def candidate_dirs():
    dirs = []
    if os.environ.get("LIBCLANG_PATH"):
        dirs.append(os.environ["LIBCLANG_PATH"])
    try:
        out = subprocess.run(["llvm-config", "--libdir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            dirs.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    dirs += sorted(glob.glob("/usr/lib/llvm-*/lib"), reverse=True)
    dirs += sorted(glob.glob("/usr/local/llvm*/lib"), reverse=True)
    dirs += ["/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
    return dirs


def main():
    for d in candidate_dirs():
        try:
            names = sorted(os.listdir(d), reverse=True)
        except OSError:
            continue
        for name in names:
            if not NAME.match(name):
                continue
            path = os.path.join(d, name)
            try:
                lib = ctypes.CDLL(path)
                lib.clang_createIndex  # libclang's C API; AttributeError if absent
            except (OSError, AttributeError):
                continue
            print(path)
            return 0
    print("no loadable libclang (bindgen's search path)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
