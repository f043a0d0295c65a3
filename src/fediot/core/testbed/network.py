"""Addresses of the simulated N-BaIoT lab: a home LAN, its router, the internet behind it.

Inside the simulator an IP address is an ``int64`` *code*: IPv4 addresses are their 32-bit
value (≥ 0), :data:`NO_IP` marks a frame without IP, and IPv6 addresses are negative codes
indexing :data:`IPV6_ADDRESSES`. Codes keep every column numeric (and generation vectorised)
until :func:`format_ips` turns them into the strings a
:class:`~fediot.core.features.packets.PacketTable` holds.

Layer 2 follows from layer 3 the way a switch port sees it: a LAN host's frames carry its own
MAC; everything from or to the internet carries the router's MAC; multicast groups map to
``01:00:5e`` + the group's low 23 bits (IPv4) or ``33:33`` + its low 32 bits (IPv6).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fediot.core.features.packets import mac_to_int

IntArray = npt.NDArray[np.int64]

NO_IP: Final[int] = -1
"""The code of "no IP address" (formatted as ``""``)."""

BROADCAST_MAC: Final[int] = 0xFFFF_FFFF_FFFF
_IPV4_MULTICAST_MAC: Final[int] = 0x01_00_5E_00_00_00
_IPV6_MULTICAST_MAC: Final[int] = 0x33_33_00_00_00_00


def ip(text: str) -> int:
    """The code of an address: ``ip("192.168.0.1") == 0xC0A80001``; IPv6 must be registered."""
    address = ipaddress.ip_address(text)
    if address.version == 4:
        return int(address)
    compressed = address.compressed
    if compressed not in IPV6_ADDRESSES:
        raise KeyError(f"IPv6 address {compressed} is not in IPV6_ADDRESSES")
    return -2 - IPV6_ADDRESSES.index(compressed)


def ipv6_link_local(mac: int) -> str:
    """The SLAAC link-local address (modified EUI-64) of a MAC."""
    raw = bytearray(mac.to_bytes(6, "big"))
    raw[0] ^= 0x02
    eui = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui))


# --- hosts of the lab --------------------------------------------------------------------------

LAN_PREFIX: Final[int] = ip("192.168.0.0")
LAN_MASK: Final[int] = 0xFFFF_FF00


@dataclass(frozen=True)
class Host:
    """A machine with one MAC and one IPv4 address.

    Parameters
    ----------
    name
        What it is, for humans.
    mac
        48-bit MAC address as an integer (a real vendor OUI in the top 24 bits).
    ip
        IPv4 code.
    """

    name: str
    mac: int
    ip: int


def _host(name: str, mac: str, address: str) -> Host:
    return Host(name, mac_to_int(mac), ip(address))


# OUIs: TP-Link router, a Samsung phone running the vendors' apps, an Intel laptop.
GATEWAY: Final[Host] = _host("TP-Link home router", "50:c7:bf:3a:91:0c", "192.168.0.1")
PHONE: Final[Host] = _host("owner's phone (vendor apps)", "8c:f5:a3:6e:20:b7", "192.168.0.11")
LAPTOP: Final[Host] = _host("laptop (UPnP/mDNS browser)", "a4:4e:31:d2:07:5e", "192.168.0.12")
LAN_HOSTS: Final[tuple[Host, ...]] = (GATEWAY, PHONE, LAPTOP)

# The nine IoT devices: MACs with vendor-style OUIs (module or OEM maker), fixed DHCP leases.
DEVICE_HOSTS: Final[dict[int, Host]] = {
    1: _host("Danmini doorbell", "ac:cf:23:5b:1e:a2", "192.168.0.101"),  # Hi-Flying Wi-Fi module
    2: _host("Ecobee thermostat", "44:61:32:c8:0f:39", "192.168.0.102"),  # ecobee inc.
    3: _host("Ennio doorbell", "00:e0:4c:81:7d:14", "192.168.0.103"),  # Realtek Wi-Fi module
    4: _host("Philips B120N10 baby monitor", "00:17:88:2a:6c:f1", "192.168.0.104"),  # Philips
    5: _host("Provision PT-737E camera", "00:18:ae:9b:43:07", "192.168.0.105"),  # TVT (OEM)
    6: _host("Provision PT-838 camera", "00:18:ae:9c:02:6d", "192.168.0.106"),  # TVT (OEM)
    7: _host("Samsung SNH-1011-N webcam", "00:09:18:4f:a8:33", "192.168.0.107"),  # Samsung Techwin
    8: _host("SimpleHome XCS7-1002", "e8:ab:fa:27:15:c8", "192.168.0.108"),  # Shenzhen Reecam
    9: _host("SimpleHome XCS7-1003", "e8:ab:fa:27:4a:09", "192.168.0.109"),  # Shenzhen Reecam
}

# Public services. Vendor clouds sit in the cloud provider ranges those vendors used; the
# botnet infrastructure uses TEST-NET-3 (RFC 5737) so it names no real host.
PUBLIC_DNS: Final[int] = ip("8.8.8.8")
CHINA_DNS: Final[int] = ip("114.114.114.114")
NTP_POOL: Final[tuple[int, ...]] = tuple(
    ip(a) for a in ("91.189.89.198", "162.159.200.123", "193.182.111.142", "212.59.0.1")
)
CNC_SERVER: Final[int] = ip("203.0.113.66")
REPORT_SERVER: Final[int] = ip("203.0.113.67")
LOADER_SERVER: Final[int] = ip("203.0.113.68")
VICTIM_SERVER: Final[int] = ip("203.0.113.90")

# IPv6 link-local traffic of the devices that speak it (codes -2, -3, …).
IPV6_ADDRESSES: Final[tuple[str, ...]] = (
    "ff02::1",
    "ff02::2",
    "ff02::fb",
    ipv6_link_local(GATEWAY.mac),
    ipv6_link_local(PHONE.mac),
    *(ipv6_link_local(host.mac) for host in DEVICE_HOSTS.values()),
)

_PRIVATE_OR_RESERVED: Final[tuple[tuple[int, int], ...]] = tuple(
    (int(net.network_address), int(net.netmask))
    for net in map(
        ipaddress.ip_network,
        (
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
            "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
            # Mirai's scanner also skips these (US DoD, GE, HP, USPS, …).
            "3.0.0.0/8", "6.0.0.0/7", "11.0.0.0/8", "15.0.0.0/8", "16.0.0.0/8",
            "21.0.0.0/8", "22.0.0.0/8",
            "26.0.0.0/8", "28.0.0.0/7", "30.0.0.0/8", "33.0.0.0/8", "55.0.0.0/8",
            "56.0.0.0/8", "214.0.0.0/7",
        ),
    )
)


def random_public_ips(rng: np.random.Generator, n: int) -> IntArray:
    """``n`` uniformly random routable IPv4 codes (private, reserved and multicast skipped)."""
    out = rng.integers(0, 2**32, size=n, dtype=np.int64)
    while True:
        bad = np.zeros(n, dtype=bool)
        for network, mask in _PRIVATE_OR_RESERVED:
            bad |= (out & mask) == network
        count = int(bad.sum())
        if count == 0:
            return out
        out[bad] = rng.integers(0, 2**32, size=count, dtype=np.int64)


def random_spoofed_ips(rng: np.random.Generator, n: int) -> IntArray:
    """Fully random source addresses, as BASHLITE forges them (our own /16 left out)."""
    out = rng.integers(0, 2**32, size=n, dtype=np.int64)
    lan = (out & 0xFFFF_0000) == (LAN_PREFIX & 0xFFFF_0000)
    out[lan] ^= 0x4000_0000
    return out


# --- layer 2 from layer 3 ----------------------------------------------------------------------

_LAN_IPS: Final[IntArray] = np.array(
    sorted(h.ip for h in (*LAN_HOSTS, *DEVICE_HOSTS.values())), dtype=np.int64
)
_LAN_MACS: Final[npt.NDArray[np.uint64]] = np.array(
    [
        next(h.mac for h in (*LAN_HOSTS, *DEVICE_HOSTS.values()) if h.ip == address)
        for address in _LAN_IPS
    ],
    dtype=np.uint64,
)
_IPV6_MACS: Final[npt.NDArray[np.uint64]] = np.array(
    [
        (
            _IPV6_MULTICAST_MAC | (int(ipaddress.IPv6Address(a)) & 0xFFFF_FFFF)
            if a.startswith("ff")
            else next(
                h.mac for h in (*LAN_HOSTS, *DEVICE_HOSTS.values()) if ipv6_link_local(h.mac) == a
            )
        )
        for a in IPV6_ADDRESSES
    ],
    dtype=np.uint64,
)


def macs_of(codes: IntArray | int) -> npt.NDArray[np.uint64]:
    """The MAC each IP code travels under on the LAN (see the module docstring)."""
    codes = np.atleast_1d(np.asarray(codes, dtype=np.int64))
    out = np.full(codes.shape, GATEWAY.mac, dtype=np.uint64)
    on_lan = (codes >= 0) & ((codes & LAN_MASK) == LAN_PREFIX)
    if on_lan.any():
        index = np.searchsorted(_LAN_IPS, codes[on_lan])
        index = np.minimum(index, len(_LAN_IPS) - 1)
        if not np.array_equal(_LAN_IPS[index], codes[on_lan]):
            raise KeyError("a LAN address without a host was used")
        out[on_lan] = _LAN_MACS[index]
    multicast = (codes >= 0) & ((codes >> 28) == 0xE)
    out[multicast] = (_IPV4_MULTICAST_MAC | (codes[multicast] & 0x7F_FFFF)).astype(np.uint64)
    out[codes == 0xFFFF_FFFF] = BROADCAST_MAC
    v6 = codes <= -2
    out[v6] = _IPV6_MACS[-2 - codes[v6]]
    return out


def format_ips(codes: IntArray) -> npt.NDArray[np.object_]:
    """IP codes → address strings (``""`` for :data:`NO_IP`), formatting each distinct one once."""
    unique, inverse = np.unique(codes, return_inverse=True)
    text: list[str] = []
    for code in unique.tolist():
        if code >= 0:
            text.append(f"{code >> 24}.{(code >> 16) & 255}.{(code >> 8) & 255}.{code & 255}")
        elif code == NO_IP:
            text.append("")
        else:
            text.append(IPV6_ADDRESSES[-2 - code])
    table = np.empty(len(text), dtype=object)
    table[:] = text
    return table[inverse.reshape(-1)]
