"""Sharing a listening port between worker processes: SO_REUSEPORT, with a classic BPF program
(SO_ATTACH_REUSEPORT_CBPF) that picks the socket by the client's source network.

The kernel's own choice hashes the whole 4-tuple, so one phone's requests would land on different
workers; by source alone, a phone stays on one worker for every protocol (a TFTP transfer). The
enumeration throttle and the connection caps count a client's network (an IPv4 address or prefix,
an IPv6 /64), so the program keys on that network, or on a wider one (never a narrower one: a host
rotating the addresses of its /64 must meet one worker's count). Socket i of a group is the i-th
bound: the workers bind one after the other, so worker i holds index i in every group. An index
the group lacks (a worker being restarted) falls back to the kernel's hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
SKF_NET_OFF = -0x100000  # loads relative to the network header
IPV4_SOURCE = 12  # offset of the source address in the IPv4 header
IPV6_SOURCE = 8  # and in the IPv6 header: its first 64 bits (the /64) are two words from here
LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
TAX = 0x07  # BPF_MISC | BPF_TAX
XOR_X = 0xAC  # BPF_ALU | BPF_XOR | BPF_X
MODULO = 0x94  # BPF_ALU | BPF_MOD | BPF_K
RETURN_A = 0x16  # BPF_RET | BPF_A


def _mask(bits: int) -> int:
    """The 32-bit mask keeping the first `bits` (0-32) bits."""
    return (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF if bits > 0 else 0


def _load(offset: int, bits: int) -> list[tuple[int, int, int, int]]:
    return [(LOAD_WORD, 0, 0, (SKF_NET_OFF + offset) & 0xFFFFFFFF), (AND, 0, 0, _mask(bits))]


def program(family: int, workers: int, prefix: int) -> list[tuple[int, int, int, int]]:
    """A = the source's first `prefix` bits (IPv6: at most 64, folded into one word); A %= workers;
    return A (the index of the socket in the group)."""
    if family == socket.AF_INET:
        steps = _load(IPV4_SOURCE, min(prefix, 32))
    else:
        bits = min(prefix, 64)
        steps = [*_load(IPV6_SOURCE, min(bits, 32)), (TAX, 0, 0, 0), *_load(IPV6_SOURCE + 4, max(bits - 32, 0)),
                 (XOR_X, 0, 0, 0)]
    return [*steps, (MODULO, 0, 0, workers), (RETURN_A, 0, 0, 0)]


# Processes sharing each listening port, and the prefixes a client's network is counted by (IPv4,
# IPv6): set once by a worker of several (htekd.daemon), from [htekd] workers and [access].
workers = 1
prefixes = (32, 64)


def allow(sock: socket.socket) -> None:
    """Before bind(): a listening socket of a worker may share its port with the other workers'."""
    if workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def attach(sock: socket.socket) -> None:
    """Once bound (UDP) or listening (TCP): the group picks the worker by source address. Sockets
    that do not share their port (SIP PnP's, one worker's own) are left alone."""
    if workers <= 1 or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return
    prefix = prefixes[0] if sock.family == socket.AF_INET else prefixes[1]
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *step)
                                                for step in program(sock.family, workers, prefix)))
    steps = len(code.raw) // 8
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }, in the machine's alignment
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, struct.pack("@HP", steps, ctypes.addressof(code)))
