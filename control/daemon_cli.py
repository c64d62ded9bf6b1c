"""`isolane daemon status`: is isolaned up, how is it set up, and who does
it think you are."""
from __future__ import annotations

import click
from rich.markup import escape

from .output import emit_json, stdout
from .rpc_cli import daemon as daemon_call, json_option, wants_json


@click.group()
def daemon():
    """The isolaned daemon this CLI talks to (see --socket).

    \b
    Example:
      isolane daemon status
    """


@daemon.command()
@json_option
def status(as_json):
    """Version, uptime, backend, interfaces, policy, tenant and program
    counts, and your role (admin, tenant or none) as the daemon sees you.

    Anyone may ask. Exit status 4 when no daemon answers on the socket.

    \b
    Examples:
      isolane daemon status
      isolane --socket /tmp/isolaned.sock daemon status -j
    """
    st = daemon_call(as_json)("daemon.status")
    if wants_json(as_json):
        emit_json(st)
        return
    caller = st.get("caller") or {}
    interfaces = ", ".join(f"{i['ifname']} ({_queues(i.get('queues'))}, {i.get('mode')})"
                           for i in st.get("interfaces") or []) or "-"
    lines = [
        ("version", str(st.get("version"))),
        ("pid", str(st.get("pid"))),
        ("uptime", f"{st.get('uptime_s', 0):.0f} s"),
        ("backend", str(st.get("backend"))),
        ("interfaces", interfaces),
        ("policy", f"{st.get('policy')}"
                   + (" (work-conserving)" if st.get("work_conserving") else " (strict)")),
        ("tenants", str(st.get("tenants"))),
        ("programs", str(st.get("programs"))),
        ("state dir", str(st.get("state_dir"))),
        ("socket", str(st.get("socket"))),
        ("metrics", f"http://{st['metrics']}/metrics" if st.get("metrics") else "off"),
        ("you", f"uid {caller.get('uid')}, role {caller.get('role')}"
                + (f", tenants {', '.join(caller['tenants'])}" if caller.get("tenants") else "")),
    ]
    stdout.print("[bold green]isolaned running[/]")
    for key, value in lines:
        stdout.print(f"  {key:<11} {escape(value)}", highlight=False)


def _queues(queues) -> str:
    """The daemon lists queue indexes ([0, 1]); a bare count reads as one."""
    if isinstance(queues, list):
        return f"queue{'s' * (len(queues) != 1)} {','.join(map(str, queues))}"
    return f"{queues} queue{'s' * (queues != 1)}"
