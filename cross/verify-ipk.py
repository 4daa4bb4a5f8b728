#!/usr/bin/env python3
"""Read .ipk files back with Python's own tar/gzip readers (independent of the tar
that wrote them) and check every member the way opkg would need it, then run the
packaged binary under qemu-user: `cthelperd --version` must print the control Version's
upstream part; `cthelperd check` must fail cleanly (exit 1, a FAIL line for the
netfilter netlink socket, no panic) because qemu-user refuses netlink sockets.

    cross/verify-ipk.py PACKAGE.ipk...       exit 1 on the first problem
"""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

ARCH = {  # OpenWrt arch -> (ELF e_machine, big-endian?, qemu)
    "arm_cortex-a7_neon-vfpv4": (40, False, "qemu-arm-static"),
    "aarch64_cortex-a53": (183, False, "qemu-aarch64-static"),
    "mipsel_24kc": (8, False, "qemu-mipsel-static"),
    "mips_24kc": (8, True, "qemu-mips-static"),
}
REQUIRED = ["Package", "Version", "Depends", "Architecture", "Installed-Size", "Description"]
KMODS = ["kmod-nfnetlink-cthelper", "kmod-nft-core", "nftables"]  # nftables: the daemon runs nft
CONFLICTS = ["kmod-nf-nathelper", "kmod-nf-nathelper-extra", "kmod-nf-nathelper-tftp"]


class Bad(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Bad(msg)


def inner_tar(outer, name):
    member = outer.getmember(name)
    need(member.isfile(), f"{name} is not a regular file")
    raw = outer.extractfile(member).read()
    need(raw[:2] == b"\x1f\x8b", f"{name} is not gzip")
    data = gzip.decompress(raw)
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:"), len(data)


def check_owner(tar, what):
    for m in tar.getmembers():
        need(m.uid == 0 and m.gid == 0, f"{what}: {m.name} owned by {m.uid}:{m.gid}, not root")
        need(not m.name.startswith("/") and ".." not in m.name.split("/"), f"{what}: unsafe path {m.name}")


def parse_control(text):
    fields, last = {}, None
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and last:
            fields[last] += "\n" + line
        elif ":" in line:
            k, v = line.split(":", 1)
            fields[k] = v.strip()
            last = k
        elif line.strip():
            raise Bad(f"control: bad line {line!r}")
    return fields


def verify(path):
    print(f"== {os.path.basename(path)}")
    with open(path, "rb") as f:
        head = f.read(2)
    need(head == b"\x1f\x8b", "outer container is not gzip (OpenWrt's ipkg-build writes a gzipped tar)")
    outer = tarfile.open(path, mode="r:gz")
    names = outer.getnames()
    print(f"   outer: {names}")
    need(names == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"],
         f"outer members {names}, want ./debian-binary ./data.tar.gz ./control.tar.gz in that order")
    check_owner(outer, "outer")
    db = outer.extractfile("./debian-binary").read()
    need(db == b"2.0\n", f"debian-binary is {db!r}")

    control_tar, _ = inner_tar(outer, "./control.tar.gz")
    check_owner(control_tar, "control.tar.gz")
    cnames = sorted(n for n in control_tar.getnames() if n not in (".", "./"))
    print(f"   control.tar.gz: {cnames}")
    fields = parse_control(control_tar.extractfile("./control").read().decode())
    for k in REQUIRED:
        need(fields.get(k), f"control lacks {k}")
    for k in ("Package", "Version", "Architecture", "Installed-Size", "Depends", "Conflicts"):
        print(f"   {k}: {fields[k]}")
    need(fields["Package"] == "cthelperd", "Package is not cthelperd")
    arch = fields["Architecture"]
    need(arch in ARCH, f"unknown Architecture {arch}")
    need(os.path.basename(path) == f"cthelperd_{fields['Version']}_{arch}.ipk", "file name != Package_Version_Arch.ipk")
    deps = [d.strip() for d in fields["Depends"].split(",")]
    for k in KMODS:
        need(k in deps, f"Depends lacks {k}")
    # the packages that autoload the kernel's own ftp/tftp helpers (same names: EEXIST)
    conflicts = [d.strip() for d in fields.get("Conflicts", "").split(",")]
    for k in CONFLICTS:
        need(k in conflicts, f"Conflicts lacks {k}")
    for script in ("./postinst", "./prerm"):
        if script in control_tar.getnames():
            m = control_tar.getmember(script)
            need(m.mode & 0o111, f"{script} not executable")
            need(control_tar.extractfile(m).read().startswith(b"#!/bin/sh\n"), f"{script} not a sh script")

    data_tar, data_len = inner_tar(outer, "./data.tar.gz")
    check_owner(data_tar, "data.tar.gz")
    need(int(fields["Installed-Size"]) == data_len,
         f"Installed-Size {fields['Installed-Size']} != uncompressed data.tar {data_len}")
    files = {m.name: m for m in data_tar.getmembers() if m.isfile()}
    for name, m in sorted(files.items()):
        print(f"   data: {name} {oct(m.mode)} {m.size} bytes")
    need("./usr/sbin/cthelperd" in files, "data lacks ./usr/sbin/cthelperd")
    need(files["./usr/sbin/cthelperd"].mode == 0o755, "binary mode is not 0755")
    if "./etc/init.d/cthelperd" in files:
        need(files["./etc/init.d/cthelperd"].mode == 0o755, "init script mode is not 0755")
        # the init script runs the daemon with the capabilities file procd's ujail reads
        init = data_tar.extractfile("./etc/init.d/cthelperd").read().decode()
        if "CAPS=/etc/capabilities/cthelperd.json" in init:
            caps = "./etc/capabilities/cthelperd.json"
            need(caps in files, "data lacks ./etc/capabilities/cthelperd.json")
            need(files[caps].mode == 0o644, "capabilities file mode is not 0644")
            sets = json.loads(data_tar.extractfile(caps).read())
            need(all(sets.get(k) == ["CAP_NET_ADMIN"] for k in
                     ("bounding", "effective", "ambient", "permitted", "inheritable")),
                 f"capabilities are not CAP_NET_ADMIN only: {sets}")
    else:
        print("   MISSING (issue #5 not yet in the tree): /etc/init.d/cthelperd")
    conffiles = []
    if "./conffiles" in control_tar.getnames():
        conffiles = control_tar.extractfile("./conffiles").read().decode().split()
    for c in conffiles:
        need("." + c in files, f"conffile {c} not in data")
    if "./etc/config/cthelperd" in files:
        need("/etc/config/cthelperd" in conffiles, "/etc/config/cthelperd is not listed in conffiles")
    else:
        print("   MISSING (issue #5 not yet in the tree): /etc/config/cthelperd")

    binary = data_tar.extractfile("./usr/sbin/cthelperd").read()
    need(binary[:4] == b"\x7fELF", "binary is not ELF")
    machine, big, qemu = ARCH[arch]
    need(binary[5] == (2 if big else 1), "binary has the wrong byte order")
    e_machine = int.from_bytes(binary[18:20], "big" if big else "little")
    need(e_machine == machine, f"binary e_machine {e_machine}, want {machine} for {arch}")
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "cthelperd")
        with open(exe, "wb") as f:
            f.write(binary)
        os.chmod(exe, 0o755)
        r = subprocess.run([qemu, exe, "--version"], capture_output=True, text=True, timeout=60)
        print(f"   {qemu} cthelperd --version -> rc {r.returncode}: {r.stdout.strip()}")
        upstream = fields["Version"].rsplit("-r", 1)[0]
        need(r.returncode == 0 and r.stdout.strip() == f"cthelperd {upstream}", "--version output is wrong")
        r = subprocess.run([qemu, exe, "check"], capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        for line in out.strip().splitlines():
            print(f"   {qemu} cthelperd check | {line}")
        print(f"   check exit code {r.returncode}")
        need(r.returncode == 1, "check should exit 1 where netlink is refused")
        need("panicked" not in out, "check panicked")
        need(any(l.startswith("FAIL") and "netfilter netlink" in l and "EPROTONOSUPPORT" in l
                 for l in out.splitlines()), "no FAIL line for the refused netlink socket")
        if "./etc/config/cthelperd" in files:
            # The packaged configuration, validated by the packaged binary.
            conf = os.path.join(d, "cthelperd.config")
            with open(conf, "wb") as f:
                f.write(data_tar.extractfile("./etc/config/cthelperd").read())
            r = subprocess.run([qemu, exe, "check-config", conf], capture_output=True, text=True,
                               timeout=60)
            print(f"   {qemu} cthelperd check-config /etc/config/cthelperd -> rc {r.returncode}, "
                  f"{len(r.stdout.splitlines())} lines of effective configuration")
            need(r.returncode == 0, f"check-config refused the packaged file: {r.stdout}{r.stderr}")
            need("config helper" in r.stdout, "check-config printed no helper section")
    print("   OK")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    bad = 0
    for p in sys.argv[1:]:
        try:
            verify(p)
        except (Bad, tarfile.TarError, KeyError, OSError) as e:
            print(f"   FAIL: {e}")
            bad += 1
    print(f"verify-ipk: {len(sys.argv) - 1 - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
