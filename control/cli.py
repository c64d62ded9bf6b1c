"""`isolane`: the command line for operators and tenants.

Through the daemon (isolaned, on --socket / $ISOLANE_SOCKET, default
/run/isolane/isolaned.sock):

    isolane tenant add NAME --owner USER|uid:N|group:G|gid:N [--share S] [--cap-us C]
                       [--queue-cap N] [--handler drop|echo|udp_echo] [--rule RULE]...
                       (what is not given: isolaned's [tenant_defaults])
    isolane tenant set TENANT [--share S] [--cap-us C] [--queue-cap N] [--handler H]
                       [--rule RULE]... [--clear-rules]
    isolane tenant del|show TENANT
    isolane tenant list
    isolane prog load TENANT FILE.c|FOLDER [--engine aot|interp] [--function F]
                      [--loop-budget N]
    isolane prog unload|show TENANT          (show --source: the C text only)
    isolane prog list
    isolane stats [TENANT]
    isolane top [--interval S] [--once]
    isolane daemon status

Local (no daemon):

    isolane prog check FILE.c [--json]
    isolane prog run FILE.c --packet HEX | --pcap FILE [--engine interp|aot|kernel] [--repeat N]
    isolane prog run --raw FILE.bin --mem HEX [--engine interp|aot|kernel]
    isolane testbed up|status|down

-j/--json, given before the command (`isolane -j tenant list`, as bpftool)
or after it, prints the daemon's result as JSON on stdout; on an error it
prints {"error": {code, name, message, data}} there too.

Exit codes, as iproute2 and bpftool users expect:

    0  success
    1  the daemon answered with an error (not found, permission denied,
       conflict, internal, ...); its message is on stderr. (Local commands:
       a failure while running.)
    2  usage error: bad options or values (also the daemon's "invalid params")
    3  program rejected by the kernel verifier or isolane's own checks (the
       verifier's reason and log are on stderr)
    4  daemon unreachable: no isolaned on the socket, or it went away mid-call
"""
from __future__ import annotations

import click

from .daemon_cli import daemon
from .prog import prog
from .rpc_cli import CliState
from .stats_cli import stats, top
from .tenant_cli import tenant
from .testbed_cli import testbed


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="isolane")
@click.option("--socket", "socket_path", envvar="ISOLANE_SOCKET", show_envvar=True,
              type=click.Path(dir_okay=False), metavar="PATH",
              help="isolaned's control socket [default: /run/isolane/isolaned.sock].")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="JSON on stdout for every command (also accepted after the command).")
@click.pass_context
def main(ctx, socket_path, as_json):
    """isolane: a shared network datapath with per-tenant time protection.

    Tenants bring their protocol handlers as XDP programs; the kernel
    verifier proves them safe, isolane bounds their cost and runs them in
    its fast path under per-tenant CPU-cycle budgets. An operator runs
    isolaned and manages tenants; each tenant loads its own programs and
    watches its own figures.

    \b
    Examples:
      isolane tenant add web --owner alice --share 0.3 --cap-us 50 \\
          --rule 'ip=10.99.0.2,proto=udp,port=7'
      isolane prog load web tenants/udp_echo
      isolane top

    Exit codes: 0 ok, 1 daemon error, 2 usage, 3 program rejected,
    4 daemon unreachable.
    """
    ctx.obj = CliState(socket=socket_path, json=as_json)


main.add_command(tenant)
main.add_command(prog)
main.add_command(stats)
main.add_command(top)
main.add_command(daemon)
main.add_command(testbed)

if __name__ == "__main__":
    main()
