"""Sharing a listening port between worker processes: SO_REUSEPORT, with a classic BPF program
(SO_ATTACH_REUSEPORT_CBPF) that picks the socket by the client's source address.

The kernel's own choice hashes the whole 4-tuple, so one phone's requests would land on different
workers; by source address alone, a phone stays on one worker for every protocol (a TFTP transfer,
the enumeration throttle's count). Socket i of a group is the i-th bound: the workers bind one after
the other, so worker i holds index i in every group. An index the group lacks (a worker being
restarted) falls back to the kernel's hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
SKF_NET_OFF = -0x100000  # loads relative to the network header
# The 32 bits of the source address taken: all of IPv4's, the last of IPv6's (the interface part).
SOURCE_OFFSET = {socket.AF_INET: 12, socket.AF_INET6: 20}
LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
MODULO = 0x94  # BPF_ALU | BPF_MOD | BPF_K
RETURN_A = 0x16  # BPF_RET | BPF_A


def program(family: int, workers: int) -> list[tuple[int, int, int, int]]:
    """A = source address; A %= workers; return A (the index of the socket in the group)."""
    return [
        (LOAD_WORD, 0, 0, (SKF_NET_OFF + SOURCE_OFFSET[family]) & 0xFFFFFFFF),
        (MODULO, 0, 0, workers),
        (RETURN_A, 0, 0, 0),
    ]


# Processes sharing each listening port: set once by a worker of several (htekd.workers).
workers = 1


def allow(sock: socket.socket) -> None:
    """Before bind(): a listening socket of a worker may share its port with the other workers'."""
    if workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def attach(sock: socket.socket) -> None:
    """Once bound (UDP) or listening (TCP): the group picks the worker by source address. Sockets
    that do not share their port (SIP PnP's, one worker's own) are left alone."""
    if workers <= 1 or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *step) for step in program(sock.family, workers)))
    steps = len(code.raw) // 8
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }, in the machine's alignment
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, struct.pack("@HP", steps, ctypes.addressof(code)))
