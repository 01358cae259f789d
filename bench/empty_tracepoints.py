#!/usr/bin/env python3
"""empty_tracepoints.py TP...: attaches an empty BPF program (`return 0`) to each raw tracepoint
named, prints ATTACHED, and holds them until SIGINT/SIGTERM. The kernel runs a raw tracepoint program
and a BTF one (tp_btf, what snapshot attaches) through the same dispatch, so the time these add is the
floor any program on those tracepoints pays before its first instruction. Needs root.
The programs are named empty_TP (cut to 15 bytes), for `bpftool prog show`."""
import ctypes, errno, os, platform, signal, struct, sys

# The bpf syscall's number differs per architecture (asm/unistd.h of each).
SYS_BPF_BY_ARCH = {"x86_64": 321, "i686": 357, "i386": 357, "aarch64": 280, "arm64": 280, "riscv64": 280,
                   "loongarch64": 280, "armv7l": 386, "ppc64le": 361, "ppc64": 361, "s390x": 351}
# The tracepoints a COW copy fires that snapshot's copy path attaches to, machine-wide.
COPY_PATH = ["page_fault_user", "mm_page_alloc", "tlb_flush", "rss_stat"]
BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN, BPF_ENABLE_STATS = 5, 17, 32
BPF_STATS_RUN_TIME = 0
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
# r0 = 0; exit
INSNS = bytes([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sys_bpf():
    arch = platform.machine()
    if arch not in SYS_BPF_BY_ARCH:
        raise OSError(errno.ENOSYS, f"no bpf syscall number known for architecture {arch!r} "
                         f"(known: {', '.join(sorted(SYS_BPF_BY_ARCH))}): add it to SYS_BPF_BY_ARCH")
    return SYS_BPF_BY_ARCH[arch]


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    fd = _libc.syscall(ctypes.c_long(sys_bpf()), ctypes.c_long(cmd), buf, ctypes.c_uint(128))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return fd


def enable_stats():
    """Turns on run_cnt/run_time_ns accounting for every program until the returned fd is closed (or
    its holder dies): unlike the kernel.bpf_stats_enabled sysctl, never left on by a killed run."""
    return bpf(BPF_ENABLE_STATS, struct.pack("=I", BPF_STATS_RUN_TIME))


def attach(tp, keep):
    insns = ctypes.create_string_buffer(INSNS, len(INSNS))
    license = ctypes.create_string_buffer(b"GPL")
    name = ("empty_" + tp).encode()[:15]
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size,
    # log_buf, kern_version, prog_flags, prog_name[16]
    attr = struct.pack("=IIQQIIQII16s", BPF_PROG_TYPE_RAW_TRACEPOINT, len(INSNS) // 8,
                       ctypes.addressof(insns), ctypes.addressof(license), 0, 0, 0, 0, 0, name)
    prog = bpf(BPF_PROG_LOAD, attr)
    tp_name = ctypes.create_string_buffer(tp.encode())
    keep += [insns, license, tp_name]
    # BPF_RAW_TRACEPOINT_OPEN: name, prog_fd; the link lives as long as the fd.
    return bpf(BPF_RAW_TRACEPOINT_OPEN, struct.pack("=QI", ctypes.addressof(tp_name), prog))


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: empty_tracepoints.py TRACEPOINT...")
    keep = []
    try:
        for tp in sys.argv[1:]:
            attach(tp, keep)
    except OSError as e:
        sys.exit(f"empty_tracepoints.py: attaching to {tp}: {e.strerror}")
    # Set explicitly: a shell's background job starts with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    print("ATTACHED", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
