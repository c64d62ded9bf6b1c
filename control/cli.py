"""`isolane`: the command line for operators and tenants.

    isolane prog check FILE.c [--json]
    isolane prog run FILE.c --packet HEX | --pcap FILE [--engine interp|kernel] [--repeat N]
    isolane prog run --raw FILE.bin --mem HEX [--engine interp|kernel]

Exit codes follow bpftool and iproute2 users' expectations: 0 success, 1 a
failure while running, 2 a usage error, 3 a program the verifier (or
isolane's own checks) rejected.
"""
from __future__ import annotations

import click

from .prog import prog
from .testbed_cli import testbed

EXIT_REJECTED = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="isolane")
def main():
    """isolane: a shared network datapath with per-tenant time protection.

    Tenants bring their protocol handlers as XDP programs; the kernel
    verifier proves them safe, isolane bounds their cost and runs them in
    its fast path under per-tenant CPU-cycle budgets.
    """


main.add_command(prog)
main.add_command(testbed)

if __name__ == "__main__":
    main()
