"""`isolane tenant`: tenants, their budgets and match rules, through isolaned.

    isolane tenant add NAME --owner USER --share 0.3 --cap-us 50 [--rule ...]...
    isolane tenant set TENANT [--share S] [--cap-us C] [--rule ...]... [--clear-rules]
    isolane tenant del TENANT
    isolane tenant list
    isolane tenant show TENANT

TENANT is a tenant's name or numeric id. Adding, deleting and changing
tenants is for root and the admin group; a tenant's owner may list and show
its own tenants.
"""
from __future__ import annotations

import ipaddress

import click
from rich.markup import escape
from rich.table import Table

from .output import emit_json, print_table, stdout
from .rpc_cli import daemon, json_option, tenant_ref, wants_json
from .stats_cli import describe_stats

HANDLERS = ["drop", "echo", "udp_echo"]  # the contract's native handlers (daemon_api.md)
RULE_HELP = ("Match rule 'ip=A.B.C.D,proto=udp|tcp,port=N[,vlan=N]' (any subset of the "
             "keys); repeat for several rules.")


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 address") from None


def _proto(value: str) -> str:
    if value.lower() not in ("udp", "tcp"):
        raise click.BadParameter(f"proto must be udp or tcp, not {value!r}")
    return value.lower()


def _int_in(lo: int, hi: int):
    def parse(value: str) -> int:
        if not value.isdigit() or not lo <= int(value) <= hi:
            raise click.BadParameter(f"expected an integer in {lo}..{hi}, not {value!r}")
        return int(value)
    return parse


# rule key on the command line -> (the contract's key, its parser)
RULE_KEYS = {
    "ip": ("ip_dst", _ipv4),
    "proto": ("proto", _proto),
    "port": ("dport", _int_in(1, 65535)),
    "vlan": ("vlan", _int_in(0, 4095)),
}


def parse_rule(text: str) -> dict:
    """'ip=10.99.0.2,proto=udp,port=7,vlan=5' -> the contract's rule object."""
    rule = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not value:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (in {text!r})")
        if key.lower() not in RULE_KEYS:
            raise click.BadParameter(f"unknown rule key {key!r}: use {', '.join(RULE_KEYS)}")
        name, parse = RULE_KEYS[key.lower()]
        try:
            rule[name] = parse(value)
        except click.BadParameter as e:
            raise click.BadParameter(f"{key}: {e.message}") from None
    if not rule:
        raise click.BadParameter(f"empty rule {text!r}")
    return rule


def _rules(ctx, param, values):
    return [parse_rule(v) for v in values] if values else None


def format_rule(rule: dict) -> str:
    """The contract's rule object as the command line writes it."""
    names = {name: key for key, (name, _) in RULE_KEYS.items()}
    return ",".join(f"{names.get(k, k)}={v}" for k, v in rule.items() if v is not None)


def _budget_options(f):
    """--share, --cap-us, --queue-cap, --handler and --rule, for add and set:
    what add is not given comes from isolaned's [tenant_defaults]; set
    changes only what it is given."""
    f = click.option("--rule", "rules", multiple=True, callback=_rules, metavar="RULE",
                     help=RULE_HELP)(f)
    f = click.option("--handler", type=click.Choice(HANDLERS),
                     help="Native handler used while no program is loaded.")(f)
    f = click.option("--queue-cap", type=click.IntRange(min=2),
                     help="Packets the tenant's queue holds before it drops (a power of "
                          "two).")(f)
    f = click.option("--cap-us", type=click.FloatRange(min=0, min_open=True),
                     help="Burst cap: the most budget the tenant may hold, in us.")(f)
    f = click.option("--share", type=click.FloatRange(min=0, max=1, min_open=True),
                     help="Fraction of each fast-path core's cycles (0 < S <= 1).")(f)
    return f


@click.group()
def tenant():
    """Tenants: who owns them, their cycle budget and the packets they get.

    \b
    Examples:
      isolane tenant add web --owner alice --share 0.3 --cap-us 50 \\
          --rule 'ip=10.99.0.2,proto=udp,port=7'
      isolane tenant set web --share 0.5
      isolane tenant show web
      isolane tenant del web
    """


@tenant.command()
@click.argument("name")
@click.option("--owner", required=True, metavar="USER|uid:N|group:G|gid:N",
              help="Who manages the tenant's programs and reads its stats.")
@_budget_options
@click.option("--id", "tenant_id", type=click.IntRange(min=0),
              help="Numeric id (default: the daemon picks the next free one).")
@json_option
def add(name, owner, share, cap_us, queue_cap, handler, rules, tenant_id, as_json):
    """Add tenant NAME with a budget and match rules (admin).

    Options not given take the values of isolaned's [tenant_defaults].

    \b
    Example:
      isolane tenant add web --owner alice --share 0.3 --cap-us 50 \\
          --rule 'ip=10.99.0.2,proto=udp,port=7'

    Packets matching a rule go to the tenant's queue; its handler (native
    until `isolane prog load`) runs them on its share of each core.
    """
    call = daemon(as_json)
    t = call("tenant.add", name=name, owner=owner, share=share, cap_us=cap_us,
             queue_cap=queue_cap, handler=handler, rules=rules, id=tenant_id)
    if wants_json(as_json):
        emit_json(t)
        return
    stdout.print(f"added tenant [bold]{escape(t['name'])}[/] (id {t['id']})", highlight=False)
    _print_tenant(t)


@tenant.command("set")
@click.argument("ref", metavar="TENANT")
@_budget_options
@click.option("--clear-rules", is_flag=True, help="Remove every match rule.")
@json_option
def set_(ref, share, cap_us, queue_cap, handler, rules, clear_rules, as_json):
    """Change a tenant's budget, queue, native handler or rules (admin).

    --rule replaces the whole rule set with the rules given.

    \b
    Example:
      isolane tenant set web --share 0.5 --cap-us 100
    """
    if clear_rules and rules:
        raise click.UsageError("give --rule or --clear-rules, not both")
    if clear_rules:
        rules = []
    if share is None and cap_us is None and queue_cap is None and handler is None \
            and rules is None:
        raise click.UsageError("nothing to change: give --share, --cap-us, --queue-cap, "
                               "--handler, --rule or --clear-rules")
    call = daemon(as_json)
    t = call("tenant.set", tenant=tenant_ref(ref), share=share, cap_us=cap_us,
             queue_cap=queue_cap, handler=handler, rules=rules)
    if wants_json(as_json):
        emit_json(t)
        return
    stdout.print(f"updated tenant [bold]{escape(t['name'])}[/]", highlight=False)
    _print_tenant(t)


@tenant.command("del")
@click.argument("ref", metavar="TENANT")
@json_option
def del_(ref, as_json):
    """Delete a tenant, its rules and its program (admin).

    \b
    Example:
      isolane tenant del web
    """
    result = daemon(as_json)("tenant.del", tenant=tenant_ref(ref))
    if wants_json(as_json):
        emit_json(result)
        return
    stdout.print(f"deleted tenant [bold]{escape(str(result['deleted']))}[/]", highlight=False)


@tenant.command("list")
@json_option
def list_(as_json):
    """List the tenants you may see (admin: all of them).

    \b
    Example:
      isolane tenant list -j | jq '.[].name'
    """
    tenants = daemon(as_json)("tenant.list")
    if wants_json(as_json):
        emit_json(tenants)
        return
    if not tenants:
        stdout.print("no tenants")
        return
    table = Table(box=None, header_style="bold")
    for col in ("ID", "NAME", "OWNER", "SHARE", "CAP us", "QUEUE", "HANDLER", "PROGRAM",
                "RULES"):
        table.add_column(col, justify="right" if col in ("ID", "SHARE", "CAP us", "QUEUE")
                         else "left")
    for t in tenants:
        prog = t.get("program")
        table.add_row(str(t["id"]), escape(t["name"]), escape(_owner(t)), f"{t['share']:g}",
                      f"{t['cap_us']:g}", str(t["queue_cap"]), t["handler"],
                      escape(f"{prog['name']} ({prog['engine']})") if prog else "-",
                      escape("; ".join(format_rule(r) for r in t["rules"]) or "-"))
    print_table(table)


@tenant.command()
@click.argument("ref", metavar="TENANT")
@json_option
def show(ref, as_json):
    """Show a tenant's configuration, program and figures.

    \b
    Example:
      isolane tenant show web
    """
    t = daemon(as_json)("tenant.show", tenant=tenant_ref(ref))
    if wants_json(as_json):
        emit_json(t)
        return
    stdout.print(f"tenant [bold]{escape(t['name'])}[/] (id {t['id']})", highlight=False)
    _print_tenant(t)
    s = t.get("stats")
    if s:
        for key, value in describe_stats(s):
            stdout.print(f"  {key:<13} {escape(value)}", highlight=False)


def _owner(t: dict) -> str:
    owner = t.get("owner") or {}
    return str(owner.get("spec") or owner.get("uid") or owner.get("gid") or "-")


def _print_tenant(t: dict) -> None:
    prog = t.get("program")
    lines = [
        ("owner", _owner(t)),
        ("share", f"{t['share']:g} of each core"),
        ("cap", f"{t['cap_us']:g} us"),
        ("queue cap", f"{t['queue_cap']} packets"),
        ("handler", t["handler"] + (" (native; a program is loaded)" if prog else " (native)")),
        ("program", f"{prog['name']} ({prog['engine']}, {prog['insns']} insns, bound "
                    f"{prog['bound_insns']} insns) sha256 {prog['sha256'][:12]}"
         if prog else "-"),
    ]
    rules = [format_rule(r) for r in t.get("rules", [])] or ["- (receives no packets)"]
    lines += [("rule" if i == 0 else "", r) for i, r in enumerate(rules)]
    for key, value in lines:
        stdout.print(f"  {key:<13} {escape(value)}", highlight=False)
