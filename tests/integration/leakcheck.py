"""Packet capture in the client namespace and the leak detector.

A capture is `tcpdump -i any` inside the client namespace, started before a test and stopped
(SIGINT, by PID) after it. `leaks(packets)` lists every packet the client host SENT whose
destination is neither the proxy host (198.51.100.1 / 2001:db8:1::1), loopback, nor the
client's own addresses (those never leave the host). Ignored, and only these: ICMPv6
neighbour discovery and MLD (types 133-136, 143), and ARP about the proxy host's address.
Anything the parser does not understand is reported, so the detector errs towards failing.
"""

import ipaddress
import os
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import netns

ALLOWED_DST = {ipaddress.ip_address(a) for a in (netns.PROXY4, netns.PROXY6)}
OWN = {ipaddress.ip_address(a) for a in (netns.CLIENT4, netns.CLIENT6)}
IGNORED_ICMP6 = {133, 134, 135, 136, 143}

PACKET_OUTGOING = 4
LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 113, 276
ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806
PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMP6"}


@dataclass
class Packet:
    outgoing: bool
    ethertype: int
    src: object = None  # ipaddress object or None
    dst: object = None
    proto: int = None
    sport: int = None
    dport: int = None
    icmp_type: int = None
    arp_target: object = None
    note: str = ""

    def __str__(self):
        if self.ethertype == ETH_P_ARP:
            return f"ARP {self.note} about {self.arp_target}"
        if self.dst is None:
            return f"ethertype 0x{self.ethertype:04x} {self.note}"
        name = PROTO_NAMES.get(self.proto, f"proto {self.proto}")

        def hp(a, p):
            if p is None:
                return str(a)
            return f"[{a}]:{p}" if a.version == 6 else f"{a}:{p}"

        extra = f" type {self.icmp_type}" if self.icmp_type is not None else ""
        return f"{name} {hp(self.src, self.sport)} -> {hp(self.dst, self.dport)}{extra} {self.note}".rstrip()


def _parse_ip(pkt, data):
    if pkt.ethertype == ETH_P_IP:
        if len(data) < 20:
            pkt.note = "truncated IPv4"
            return
        ihl = (data[0] & 0x0F) * 4
        pkt.proto = data[9]
        pkt.src = ipaddress.ip_address(data[12:16])
        pkt.dst = ipaddress.ip_address(data[16:20])
        payload = data[ihl:]
    else:
        if len(data) < 40:
            pkt.note = "truncated IPv6"
            return
        nh = data[6]
        pkt.src = ipaddress.ip_address(data[8:24])
        pkt.dst = ipaddress.ip_address(data[24:40])
        payload = data[40:]
        # Walk extension headers (MLD reports carry a hop-by-hop header).
        for _ in range(8):
            if nh in (0, 43, 60) and len(payload) >= 2:
                nh, payload = payload[0], payload[(payload[1] + 1) * 8:]
            elif nh == 44 and len(payload) >= 8:
                nh, payload = payload[0], payload[8:]
            else:
                break
        pkt.proto = nh
    if pkt.proto in (6, 17) and len(payload) >= 4:
        pkt.sport, pkt.dport = struct.unpack("!HH", payload[:4])
        if pkt.proto == 6 and len(payload) >= 14:
            flags = payload[13]
            pkt.note = "".join(c for bit, c in ((2, "S"), (16, "."), (1, "F"), (4, "R"), (8, "P"))
                               if flags & bit)
    elif pkt.proto in (1, 58) and payload:
        pkt.icmp_type = payload[0]


def parse_pcap(path):
    """Returns the packets of a pcap file written by `tcpdump -i any -w`."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file ({len(data)} bytes)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype not in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
        raise ValueError(f"{path}: link type {linktype}, expected Linux cooked capture (-i any)")
    packets, off = [], 24
    while off + 16 <= len(data):
        _ts, _us, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == LINKTYPE_LINUX_SLL:
            if len(frame) < 16:
                continue
            pkttype = struct.unpack("!H", frame[0:2])[0]
            ethertype = struct.unpack("!H", frame[14:16])[0]
            body = frame[16:]
        else:
            if len(frame) < 20:
                continue
            ethertype = struct.unpack("!H", frame[0:2])[0]
            pkttype = frame[10]
            body = frame[20:]
        pkt = Packet(outgoing=pkttype == PACKET_OUTGOING, ethertype=ethertype)
        if ethertype in (ETH_P_IP, ETH_P_IPV6):
            _parse_ip(pkt, body)
        elif ethertype == ETH_P_ARP and len(body) >= 28:
            op = struct.unpack("!H", body[6:8])[0]
            pkt.note = {1: "who-has", 2: "reply"}.get(op, f"op {op}")
            pkt.arp_target = ipaddress.ip_address(body[24:28])
        packets.append(pkt)
    return packets


def is_leak(p):
    if not p.outgoing:
        return False
    if p.ethertype == ETH_P_ARP:
        return p.arp_target not in ALLOWED_DST
    if p.dst is None:
        return True  # not understood: report it
    if p.proto == 58 and p.icmp_type in IGNORED_ICMP6:
        return False
    if p.dst.is_loopback or p.dst in OWN or p.dst in ALLOWED_DST:
        return False
    return True


def leaks(packets):
    return [p for p in packets if is_leak(p)]


class Capture:
    """tcpdump -i any in the client namespace; stopped by PID with SIGINT."""

    def __init__(self, path):
        self.path = Path(path)
        self.errpath = self.path.with_suffix(".tcpdump.log")
        self._err = open(self.errpath, "wb")
        self.popen = subprocess.Popen(
            netns.in_ns(netns.NS_CLIENT, "tcpdump", "-i", "any", "-n", "-U", "--immediate-mode",
                        "-Z", "root", "-s", "256", "-w", str(self.path)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err,
            start_new_session=True)
        self.packets = None
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if b"listening on" in self.errpath.read_bytes():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tcpdump did not start: {self.errpath.read_text(errors='replace')}")

    def stop(self):
        """Stops tcpdump (letting the last packets drain) and parses the capture once."""
        if self.packets is not None:
            return self.packets
        if self.popen.poll() is None:
            time.sleep(0.3)  # let packets sent just now reach tcpdump
            os.kill(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._err.close()
        self.packets = parse_pcap(self.path) if self.path.exists() else []
        return self.packets

    def leaks(self):
        return leaks(self.stop())

    def sent_to(self, addr, proto=None, dport=None):
        """Outgoing packets to `addr` (optionally with that protocol/port)."""
        a = ipaddress.ip_address(addr)
        return [p for p in self.stop() if p.outgoing and p.dst == a
                and (proto is None or p.proto == proto) and (dport is None or p.dport == dport)]

    def summary(self, limit=40):
        pk = self.stop()
        lines = [("OUT " if p.outgoing else "in  ") + str(p) for p in pk[:limit]]
        if len(pk) > limit:
            lines.append(f"... {len(pk) - limit} more")
        return "\n".join(lines) or "(no packets)"


def assert_no_leak(capture, what=""):
    bad = capture.leaks()
    if bad:
        listing = "\n".join(f"  {p}" for p in bad[:30])
        more = f"\n  ... and {len(bad) - 30} more" if len(bad) > 30 else ""
        raise AssertionError(
            f"LEAK{(' during ' + what) if what else ''}: the client host sent {len(bad)} packet(s) "
            f"to somewhere other than the proxy host ({netns.PROXY4} / {netns.PROXY6}):\n"
            f"{listing}{more}\n(capture: {capture.path})")
