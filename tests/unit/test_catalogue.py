"""The error catalogue: lookup by name and number, context-dependent causes, advice."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest

from conncap import catalogue
from conncap.catalogue import Cause, advice, classify, entries, errno_name, lookup
from conncap.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]

POSIX_CODES = {
    "EADDRNOTAVAIL": Cause.EPHEMERAL_PORTS,
    "EADDRINUSE": Cause.EPHEMERAL_PORTS,
    "EMFILE": Cause.FILE_DESCRIPTORS,
    "ENFILE": Cause.SYSTEM_FILE_TABLE,
    "ENOBUFS": Cause.MEMORY,
    "ENOMEM": Cause.MEMORY,
    "ECONNREFUSED": Cause.SERVER_REFUSED,
    "ETIMEDOUT": Cause.TIMEOUT,
    "ECONNRESET": Cause.SERVER_CLOSED,
    "EHOSTUNREACH": Cause.NETWORK,
    "ENETUNREACH": Cause.NETWORK,
    "EACCES": Cause.PERMISSION,
    "EPERM": Cause.PERMISSION,
    "EPIPE": Cause.SERVER_CLOSED,
    "ECONNABORTED": Cause.TIMEOUT,
    "EAGAIN": Cause.UNKNOWN,
}

WINSOCK_CODES = {
    "WSAEADDRINUSE": (10048, Cause.EPHEMERAL_PORTS),
    "WSAEADDRNOTAVAIL": (10049, Cause.NETWORK),
    "WSAENOBUFS": (10055, Cause.MEMORY),
    "WSAEMFILE": (10024, Cause.FILE_DESCRIPTORS),
    "WSAECONNRESET": (10054, Cause.SERVER_CLOSED),
    "WSAETIMEDOUT": (10060, Cause.TIMEOUT),
    "WSAECONNREFUSED": (10061, Cause.SERVER_REFUSED),
    "WSAECONNABORTED": (10053, Cause.TIMEOUT),
    "WSAENETUNREACH": (10051, Cause.NETWORK),
    "WSAEHOSTUNREACH": (10065, Cause.NETWORK),
    "WSAEACCES": (10013, Cause.PERMISSION),
}


@pytest.mark.parametrize(("name", "cause"), sorted(POSIX_CODES.items()))
def test_posix_code_by_name_and_this_os_number(name: str, cause: Cause) -> None:
    number = getattr(errno, name)
    by_name = lookup(name)
    assert by_name.name == name
    assert by_name.platform == "posix"
    assert by_name.cause is cause
    assert by_name.numbers == (number,)
    assert lookup(name.lower()) is by_name
    assert lookup(str(number)) is by_name
    assert lookup(number) is by_name
    assert errno_name(number) in (name, "EWOULDBLOCK")


@pytest.mark.parametrize(("name", "number", "cause"), [(n, *v) for n, v in WINSOCK_CODES.items()])
def test_winsock_code_by_name_and_number(name: str, number: int, cause: Cause) -> None:
    entry = lookup(str(number))
    assert entry.name == name
    assert entry.platform == "windows"
    assert entry.numbers == (number,)
    assert entry.cause is cause
    assert lookup(name) is entry
    assert lookup(name.lower()) is entry
    assert entry.posix_equivalent
    assert errno_name(number) == name


def test_every_entry_is_complete_and_one_line() -> None:
    seen: set[str] = set()
    for e in entries():
        assert e.name not in seen
        seen.add(e.name)
        assert e.side in ("client", "server", "network")
        for text in (e.meaning, e.when, e.note, e.knob):
            assert "\n" not in text
        assert e.meaning and e.when
        if e.platform == "posix":
            assert e.windows_equivalent, e.name
        else:
            assert 10000 < e.numbers[0] < 12000
    assert set(POSIX_CODES) | set(WINSOCK_CODES) <= seen


def test_aliases_and_whitespace() -> None:
    assert lookup("EWOULDBLOCK").name == "EAGAIN"
    assert lookup("  emfile ").name == "EMFILE"
    assert lookup(" 10048").name == "WSAEADDRINUSE"


@pytest.mark.parametrize("code", ["EFOO", "WSAEFOO", "4242", "-1", "", "ephemeral", "10999"])
def test_unknown_code_is_one_usage_line(code: str) -> None:
    with pytest.raises(UsageError) as info:
        lookup(code)
    message = str(info.value)
    assert "\n" not in message
    assert "catalogue" in message or "unknown error code" in message


def test_errno_name_unknown_number() -> None:
    assert errno_name(4242) == "E4242"
    assert errno_name(errno.EADDRNOTAVAIL) == "EADDRNOTAVAIL"


# --- one code, several causes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "op", "platform", "cause"),
    [
        (errno.EADDRINUSE, "connect", None, Cause.EPHEMERAL_PORTS),
        (errno.EADDRINUSE, "bind", None, Cause.EPHEMERAL_PORTS),
        (errno.EADDRINUSE, "listen", None, Cause.UNKNOWN),
        (errno.EADDRNOTAVAIL, "connect", None, Cause.EPHEMERAL_PORTS),
        (errno.EADDRNOTAVAIL, "bind", None, Cause.NETWORK),
        (10055, "connect", "win32", Cause.EPHEMERAL_PORTS),
        (10055, "bind", "win32", Cause.EPHEMERAL_PORTS),
        (10055, "accept", "win32", Cause.MEMORY),
        (10055, "socket", "win32", Cause.MEMORY),
        (10048, "connect", "win32", Cause.EPHEMERAL_PORTS),
        (10048, "listen", "win32", Cause.UNKNOWN),
        (10049, "connect", "win32", Cause.NETWORK),
        (10061, "connect", "linux", Cause.SERVER_REFUSED),
        (10999, "connect", "win32", Cause.UNKNOWN),
        (4242, "connect", None, Cause.UNKNOWN),
        # macOS numbering read anywhere: 49 EADDRNOTAVAIL, 48 EADDRINUSE, 35 EAGAIN, 55 ENOBUFS
        (49, "connect", "darwin", Cause.EPHEMERAL_PORTS),
        (48, "listen", "darwin", Cause.UNKNOWN),
        (55, "accept", "darwin", Cause.MEMORY),
        (61, "connect", "darwin", Cause.SERVER_REFUSED),
        # Linux numbering read anywhere
        (99, "connect", "linux", Cause.EPHEMERAL_PORTS),
        (24, "accept", "linux", Cause.FILE_DESCRIPTORS),
        (111, "connect", "linux", Cause.SERVER_REFUSED),
    ],
)
def test_classify_by_call_and_platform(
    number: int, op: str, platform: str | None, cause: Cause
) -> None:
    assert classify(number, op=op, platform=platform) is cause


def test_classify_agrees_with_cause_of_errno_on_connect() -> None:
    """The stable cause_of_errno and the richer classify must not contradict each other."""
    for e in entries():
        if e.platform != "posix" or not e.numbers:
            continue
        n = e.numbers[0]
        stable = catalogue.cause_of_errno(n)
        if stable is not Cause.UNKNOWN:
            assert classify(n, op="connect") is stable, e.name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux numbering")
def test_embedded_linux_numbers_match_this_kernel() -> None:
    for name, number in catalogue.LINUX_ERRNO.items():
        assert getattr(errno, name) == number, name


def test_embedded_darwin_numbers_are_distinct_and_bsd_shaped() -> None:
    values = list(catalogue.DARWIN_ERRNO.values())
    assert len(values) == len(set(values))
    assert catalogue.DARWIN_ERRNO["EADDRNOTAVAIL"] == 49
    assert catalogue.DARWIN_ERRNO["EAGAIN"] == 35
    assert set(catalogue.DARWIN_ERRNO) == set(catalogue.LINUX_ERRNO)


def test_side_of_accept_errors_is_the_server() -> None:
    assert catalogue.side_of(errno.EMFILE, op="accept") == "server"
    assert catalogue.side_of(errno.EMFILE, op="socket") == "client"
    assert catalogue.side_of(errno.ECONNREFUSED, op="connect") == "server"


# --- advice -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cause", list(Cause))
@pytest.mark.parametrize("os_name", ["linux", "darwin", "macos", "windows", "win32"])
def test_advice_for_every_cause_and_os(cause: Cause, os_name: str) -> None:
    a = advice(cause, os_name)
    assert a.cause is cause
    assert a.os in ("linux", "macos", "windows")
    assert all(isinstance(c, str) and c and "\n" not in c for c in a.commands)
    json.dumps(a.to_json())
    if cause not in (Cause.UNKNOWN,):
        assert a.knob


def test_advice_unknown_os_is_value_error() -> None:
    with pytest.raises(ValueError):
        advice(Cause.MEMORY, "plan9")


def test_port_advice_has_the_exact_commands() -> None:
    linux = advice(Cause.EPHEMERAL_PORTS, "linux")
    assert 'sysctl -w net.ipv4.ip_local_port_range="1024 65535"' in linux.commands
    assert any("/etc/sysctl.d/60-conncap.conf" in c for c in linux.commands)
    mac = advice(Cause.EPHEMERAL_PORTS, "darwin")
    assert "sudo sysctl -w net.inet.ip.portrange.first=1024" in mac.commands
    win = advice(Cause.EPHEMERAL_PORTS, "windows")
    assert "netsh int ipv4 set dynamicport tcp start=1025 num=64511" in win.commands
    assert "netsh int ipv6 set dynamicport tcp start=1025 num=64511" in win.commands
    assert any("MaxUserPort" in c and "REG_DWORD" in c for c in win.commands)
    assert any("TcpTimedWaitDelay" in c for c in win.commands)
    assert "reboot" in linux.windows and "MaxUserPort" in linux.windows


def test_descriptor_and_table_advice_has_the_exact_commands() -> None:
    linux = advice(Cause.FILE_DESCRIPTORS, "linux").commands
    assert any(c.startswith("ulimit -n") for c in linux)
    assert any("* soft nofile 1048576" in c and "/etc/security/limits.conf" in c for c in linux)
    assert any("LimitNOFILE=" in c for c in linux)
    assert any("fs.nr_open" in c for c in linux)
    mac = advice(Cause.FILE_DESCRIPTORS, "macos").commands
    assert "sudo launchctl limit maxfiles 65536 200000" in mac
    assert any("kern.maxfilesperproc" in c for c in mac)
    assert any("fs.file-max=" in c for c in advice(Cause.SYSTEM_FILE_TABLE, "linux").commands)
    assert any("kern.maxfiles=" in c for c in advice(Cause.SYSTEM_FILE_TABLE, "darwin").commands)
    backlog = advice(Cause.SERVER_BACKLOG, "linux").commands
    assert any("net.core.somaxconn" in c for c in backlog)
    assert any("tcp_max_syn_backlog" in c for c in backlog)
    assert any("kern.ipc.somaxconn" in c for c in advice(Cause.SERVER_BACKLOG, "darwin").commands)
    assert any("nf_conntrack_max" in c for c in advice(Cause.CONNTRACK, "linux").commands)
    assert any("tcp_mem" in c for c in advice(Cause.MEMORY, "linux").commands)
    assert any("TcpNumConnections" in c for c in advice(Cause.MEMORY, "windows").commands)


def test_entries_carry_their_cause_commands() -> None:
    e = lookup("EADDRNOTAVAIL")
    assert e.raise_linux == advice(Cause.EPHEMERAL_PORTS, "linux").commands
    assert e.raise_windows == advice(Cause.EPHEMERAL_PORTS, "windows").commands
    assert "10055" in e.windows_equivalent
    nobufs = lookup("WSAENOBUFS")
    assert "port" in nobufs.when and "memory" in nobufs.when


def test_to_json_round_trips() -> None:
    for e in entries():
        doc = json.loads(json.dumps(e.to_json()))
        assert doc["name"] == e.name
        assert doc["cause"] == str(e.cause)


def test_docs_catalogue_is_generated_from_the_entries() -> None:
    path = ROOT / "docs" / "catalogue.md"
    assert path.read_text(encoding="utf-8") == catalogue.catalogue_markdown(), (
        "docs/catalogue.md is stale: regenerate it with "
        "python -c 'from conncap.catalogue import catalogue_markdown as m; "
        'open("docs/catalogue.md", "w").write(m())\''
    )


def test_cause_of_name_follows_the_catalogue_for_recorded_names() -> None:
    from conncap.catalogue import Cause, cause_of_name

    assert cause_of_name("EADDRNOTAVAIL") is Cause.EPHEMERAL_PORTS
    assert cause_of_name("emfile") is Cause.FILE_DESCRIPTORS
    assert cause_of_name("WSAEADDRINUSE") is Cause.EPHEMERAL_PORTS
    assert cause_of_name("WSAEADDRNOTAVAIL") is Cause.NETWORK
    assert cause_of_name("WSAENOBUFS", op="accept") is Cause.MEMORY
    assert cause_of_name("E4242") is Cause.UNKNOWN


# --- the advice says what is true (issue 12) ----------------------------------------------------


def test_macos_boot_args_are_appended_to_not_overwritten() -> None:
    mac = advice(Cause.MEMORY, "darwin")
    (command,) = mac.commands
    assert command.startswith('sudo nvram boot-args="$(nvram boot-args 2>/dev/null | cut -f2-) ')
    assert "ncl=131072" in command and "reads the current boot-args" in command
    assert 'boot-args="ncl=' not in " ".join(lookup("WSAENOBUFS").raise_macos)
    assert "nvram boot-args" in mac.checks
    assert "append to the current value" in mac.note


def test_memory_advice_agrees_that_idle_connections_have_small_buffers() -> None:
    linux = advice(Cause.MEMORY, "linux")
    assert "MemoryMax" in linux.commands[0]  # what bounds idle connections comes first
    tcp_mem = next(c for c in linux.commands if c.startswith("sysctl -w net.ipv4.tcp_mem"))
    assert "only when connections carry data" in tcp_mem
    assert "bounds only data queued in socket buffers" in linux.note
    assert "nearly empty" in linux.note
    assert "tcp_mem bounds data queued in buffers" in lookup("ENOMEM").note


def test_the_rest_of_the_advice_read_once() -> None:
    # abort_on_overflow resets after the handshake: a reset, not a refusal
    assert "abort_on_overflow" not in lookup("ECONNREFUSED").when
    assert "tcp_abort_on_overflow=1" in lookup("ECONNRESET").when
    # the default (1024) changes nothing
    perm = advice(Cause.PERMISSION, "linux").commands
    assert perm[0].startswith("sysctl -w net.ipv4.ip_unprivileged_port_start=80")
    # systemd sets fs.file-max to the maximum: never lower it
    assert (
        advice(Cause.SYSTEM_FILE_TABLE, "linux")
        .commands[0]
        .startswith('[ "$(sysctl -n fs.file-max)" -lt 2097152 ] && sysctl -w fs.file-max=2097152')
    )


def test_the_summary_names_a_persisting_command_only_for_the_same_setting() -> None:
    from conncap.report.summary import persisting

    assert persisting(advice(Cause.EPHEMERAL_PORTS, "linux").commands) == (
        "echo 'net.ipv4.ip_local_port_range = 1024 65535' >> /etc/sysctl.d/60-conncap.conf "
        "&& sysctl --system"
    )
    # macOS's second command is portrange.last, Windows' the ipv6 range: neither persists
    assert persisting(advice(Cause.EPHEMERAL_PORTS, "darwin").commands) == (
        "echo 'net.inet.ip.portrange.first=1024' | sudo tee -a /etc/sysctl.conf"
    )
    assert persisting(advice(Cause.EPHEMERAL_PORTS, "windows").commands) is None
    assert persisting(advice(Cause.MEMORY, "linux").commands) is None
