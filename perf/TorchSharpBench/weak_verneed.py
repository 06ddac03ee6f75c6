#!/usr/bin/env python3
"""Marks one version requirement of an ELF shared library weak (VER_FLG_WEAK), in place.

    weak_verneed.py LIB.so GLIBCXX_3.4.32

glibc's loader refuses a library whose required version its dependency lacks, unless the requirement is weak. Used by
glibcxx-shim.sh on the build output's copy of libLibTorchSharp.so only (the one symbol at that version is provided by
the shim and unversioned there).
"""
import struct
import sys


def main(path, version):
    data = bytearray(open(path, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    verneed = next((s for s in sections if s[1] == 0x6FFFFFFE), None)
    if verneed is None:
        raise SystemExit(f"{path}: no .gnu.version_r section")
    strtab = sections[verneed[6]]
    name_at = lambda off: data[strtab[4] + off:data.index(b"\0", strtab[4] + off)].decode()
    found = 0
    off = verneed[4]
    while True:
        vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", data, off)
        aux = off + vn_aux
        for _ in range(vn_cnt):
            vna_hash, vna_flags, vna_other, vna_name, vna_next = struct.unpack_from("<IHHII", data, aux)
            if name_at(vna_name) == version:
                struct.pack_into("<H", data, aux + 4, vna_flags | 0x2)
                found += 1
            aux += vna_next
        if vn_next == 0:
            break
        off += vn_next
    if not found:
        raise SystemExit(f"{path}: requires no version {version}")
    open(path + ".tmp", "wb").write(data)
    import os
    os.replace(path + ".tmp", path)
    print(f"{path}: {version} marked weak", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
