"""vagrant/: the two-VM testbed's Vagrantfile and the host's NIC script.

Vagrant itself needs a provider (VirtualBox, libvirt) to validate, and no
provider runs here, so the Vagrantfile is checked with Ruby (in the
Makefile's apt list): `ruby -c` for syntax, then the file is run under a
stand-in for `Vagrant.configure` that records every configuration call, and
the recorded tree is checked for what the testbed needs: both machines, one
private subnet, multiqueue virtio, `make setup` as the provisioner. Where
`vagrant` is installed, `vagrant validate --ignore-provider` runs as well.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).resolve().parent.parent / "vagrant"
VAGRANTFILE = VAGRANT_DIR / "Vagrantfile"
NIC_SCRIPT = VAGRANT_DIR / "host-nic.sh"
MACHINES = {"gen", "host"}

# Runs a Vagrantfile with `Vagrant.configure` replaced by a recorder: every
# call on the config object (and on what it returns, and on what blocks are
# given) becomes {"call", "args", "kwargs", "children"}; argument-less calls
# without a block (config.vm, config.ssh) are namespaces, recorded once.
# BasicObject, so no Kernel method shadows a configuration name.
_RECORDER_RB = r"""
require "json"

class ConfigRecorder < BasicObject
  def initialize
    @calls = []
    @namespaces = {}
  end

  def __calls
    @calls
  end

  def method_missing(name, *args, **kwargs, &block)
    if args.empty? && kwargs.empty? && block.nil?
      return @namespaces[name] if @namespaces.key?(name)
    end
    child = ::ConfigRecorder.new
    @calls << { "call" => name.to_s, "args" => args, "kwargs" => kwargs,
                "children" => child.__calls }
    @namespaces[name] = child if args.empty? && kwargs.empty? && block.nil?
    block.call(child) if block
    child
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  CONFIGS = []

  def self.configure(version)
    root = ::ConfigRecorder.new
    yield root
    CONFIGS << { "version" => version.to_s, "calls" => root.__calls }
  end
end

Dir.chdir(::File.dirname(ARGV[0]))
load ::File.basename(ARGV[0])
puts JSON.generate(Vagrant::CONFIGS)
"""


def _ruby() -> str:
    ruby = shutil.which("ruby")
    assert ruby, "ruby is not installed: `make setup` installs it (Makefile APT_PACKAGES)"
    return ruby


def record(vagrantfile: Path) -> list[dict]:
    """The configuration calls the Vagrantfile makes, as a tree (see above)."""
    out = subprocess.run([_ruby(), "-e", _RECORDER_RB, str(vagrantfile)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"running {vagrantfile} under the recorder failed:\n{out.stderr}"
    return json.loads(out.stdout)


def _calls(calls: list[dict], *path: str) -> list[dict]:
    """Calls reached by following `path` through namespaces (`vm`, then
    `network`): every match of the last name."""
    if not path:
        return []
    head, rest = path[0], path[1:]
    found = [c for c in calls if c["call"] == head]
    if not rest:
        return found
    return [m for c in found for m in _calls(c["children"], *rest)]


def _provider(calls: list[dict], name: str) -> dict:
    """Provider settings (`cpus=` -> value) made in `vm.provider NAME` blocks."""
    settings = {}
    for p in _calls(calls, "vm", "provider"):
        if p["args"][:1] == [name]:
            settings.update({c["call"]: c["args"][0] for c in p["children"] if c["call"].endswith("=")})
    return settings


def _provision_text(prov: dict) -> str:
    """What a shell provisioner runs: its inline script or its file."""
    kw = prov["kwargs"]
    if "inline" in kw:
        return kw["inline"]
    if "path" in kw:
        return (VAGRANT_DIR / kw["path"]).read_text()
    return ""


def check(configs: list[dict]) -> list[str]:
    """What is wrong with a recorded Vagrantfile for the testbed; [] if nothing."""
    problems = []
    if [c["version"] for c in configs] != ["2"]:
        return [f"expected one Vagrant.configure(\"2\"), got {[c['version'] for c in configs]}"]
    top = configs[0]["calls"]

    boxes = [c["args"][0] for c in _calls(top, "vm", "box=")]
    if boxes != ["debian/bookworm64"]:
        problems.append(f"box should be debian/bookworm64 (Debian 12), got {boxes}")

    for provider in ("libvirt", "virtualbox"):
        if not _provider(top, provider).get("cpus="):
            problems.append(f"no {provider} provider block setting cpus")
    cpus = _provider(top, "libvirt").get("cpus=", 0)

    folders = [(f["args"], f["kwargs"]) for f in _calls(top, "vm", "synced_folder")]
    if not any(a == ["..", "/vagrant"] and k.get("type") == "rsync" for a, k in folders):
        problems.append("the repository (..) is not synced to /vagrant with rsync")

    defines = {d["args"][0]: d["children"] for d in _calls(top, "vm", "define")}
    if set(defines) != MACHINES:
        problems.append(f"machines should be {sorted(MACHINES)}, got {sorted(defines)}")

    ips = {}
    for name, calls in defines.items():
        nets = [n["kwargs"] for n in _calls(calls, "vm", "network") if n["args"][:1] == ["private_network"]]
        if len(nets) != 1 or "ip" not in nets[0]:
            problems.append(f"{name}: expected one private_network with an ip, got {nets}")
            continue
        net = nets[0]
        ips[name] = ipaddress.ip_address(net["ip"])
        if not ips[name].is_private:
            problems.append(f"{name}: {ips[name]} is not a private address")
        queues = net.get("libvirt__driver_queues")
        if not isinstance(queues, int) or queues < 2:
            problems.append(f"{name}: libvirt__driver_queues should be >= 2 (multiqueue virtio), got {queues}")
        elif queues < 2 * cpus:
            problems.append(f"{name}: {queues} queue pairs for {cpus} CPUs: virtio_net needs "
                            "channels + CPUs of them for lock-free XDP_TX")
        if net.get("virtualbox__nic_type") != "virtio":
            problems.append(f"{name}: VirtualBox NIC should be virtio, got {net.get('virtualbox__nic_type')}")

        shells = [p for p in _calls(calls, "vm", "provision") if p["kwargs"].get("type") == "shell"
                  or p["args"][:1] == ["shell"]]
        scripts = [_provision_text(p) for p in shells]
        if not any(re.search(r"^\s*make -C /vagrant setup\s*$", s, re.M) for s in scripts):
            problems.append(f"{name}: no shell provisioner runs `make -C /vagrant setup`")
        if any("python3-bpfcc" in s for s in scripts):
            problems.append(f"{name}: a provisioner copies the Makefile's package list instead of `make setup`")

    if len(ips) == 2:
        nets = {ipaddress.ip_network(f"{ip}/24", strict=False) for ip in ips.values()}
        if len(nets) != 1 or len(set(ips.values())) != 2:
            problems.append(f"gen and host need two addresses in one /24, got {ips}")

    host = defines.get("host", [])
    nic = [p for p in _calls(host, "vm", "provision") if p["kwargs"].get("path") == NIC_SCRIPT.name]
    if len(nic) != 1:
        problems.append(f"host: expected one provisioner running {NIC_SCRIPT.name}, got {len(nic)}")
    else:
        args = nic[0]["kwargs"].get("args", [])
        if args[:2] != ["install", str(ips.get("host"))]:
            problems.append(f"host: {NIC_SCRIPT.name} should be given install and the host's address, got {args}")
        elif len(args) < 3 or not args[2].isdigit() or not 1 <= int(args[2]) <= cpus:
            problems.append(f"host: {NIC_SCRIPT.name} channels should be 1..{cpus} (the CPUs), got {args[2:]}")
    return problems


@pytest.mark.unit
def test_vagrantfile_syntax():
    out = subprocess.run([_ruby(), "-c", str(VAGRANTFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Syntax OK" in out.stdout


@pytest.mark.unit
def test_ruby_syntax_check_catches_an_unbalanced_block(tmp_path):
    broken = tmp_path / "Vagrantfile"
    broken.write_text(VAGRANTFILE.read_text().rstrip().removesuffix("end"))
    out = subprocess.run([_ruby(), "-c", str(broken)], capture_output=True, text=True)
    assert out.returncode != 0


@pytest.mark.unit
def test_vagrantfile_defines_the_testbed():
    assert check(record(VAGRANTFILE)) == []


def _mutated(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of vagrant/ whose Vagrantfile has `old` replaced by `new`."""
    copy = tmp_path / "vagrant"
    shutil.copytree(VAGRANT_DIR, copy, ignore=shutil.ignore_patterns(".vagrant"))
    text = (copy / "Vagrantfile").read_text()
    assert old in text, f"{old!r} is no longer in the Vagrantfile: update this test"
    (copy / "Vagrantfile").write_text(text.replace(old, new))
    return copy / "Vagrantfile"


@pytest.mark.unit
@pytest.mark.parametrize("old, new, complaint", [
    ('config.vm.define "gen"', 'config.vm.define "loadgen"', "machines should be"),
    ("make -C /vagrant setup", "make -C /vagrant build", "make -C /vagrant setup"),
    ('GEN_IP = "#{SUBNET}.10"', 'GEN_IP = "192.168.57.10"', "one /24"),
    ("NIC_QUEUES = 2 * CPUS", "NIC_QUEUES = 1", "driver_queues"),
    ('config.vm.provider "libvirt"', 'config.vm.provider "docker"', "no libvirt provider"),
])
def test_check_catches_a_broken_testbed(tmp_path, old, new, complaint):
    problems = check(record(_mutated(tmp_path, old, new)))
    assert any(complaint in p for p in problems), problems


@pytest.mark.unit
def test_vagrant_validate_where_vagrant_is_installed():
    """Vagrant's own check of every option (provider blocks ignored, as no
    provider runs here); CI has no vagrant, so there the Ruby checks above
    stand alone and this one checks only that the NIC script parses."""
    out = subprocess.run(["sh", "-n", str(NIC_SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if shutil.which("vagrant") is None:
        return
    out = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANT_DIR,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout


# A stand-in for ethtool on a virtio_net NIC with 8 queue pairs, 1 in use and
# GRO_HW on (no virtio NIC exists on this machine): answers -i/-l/-k like
# ethtool 6.1 and logs every change (-L, -K) to $ETHTOOL_LOG.
_FAKE_ETHTOOL = textwrap.dedent("""\
    #!/bin/sh
    case "$1" in
    -i) echo "driver: virtio_net" ;;
    -l) printf 'Channel parameters for %s:\\nPre-set maximums:\\nRX:\\t\\tn/a\\nTX:\\t\\tn/a\\n' "$2"
        printf 'Other:\\t\\tn/a\\nCombined:\\t8\\nCurrent hardware settings:\\nRX:\\t\\tn/a\\n'
        printf 'TX:\\t\\tn/a\\nOther:\\t\\tn/a\\nCombined:\\t1\\n' ;;
    -k) printf 'Features for %s:\\ngeneric-receive-offload: on\\n' "$2"
        printf 'large-receive-offload: off [fixed]\\nrx-gro-hw: on\\n' ;;
    *) echo "$@" >>"$ETHTOOL_LOG" ;;
    esac
""")


@pytest.mark.integration
def test_host_nic_script_sets_channels_and_offloads(tmp_path):
    """host-nic.sh finds the NIC by its address (a real one, in a namespace),
    asks for CHANNELS combined queues and turns GRO_HW off, leaving GRO and
    the fixed LRO alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespace)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ethtool").write_text(_FAKE_ETHTOOL)
    (bindir / "ethtool").chmod(0o755)
    log = tmp_path / "ethtool.log"
    ns, ifname, addr = "vgt-nic", "vgt-eth1", "10.251.7.11"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip = ["ip", "-n", ns]
        subprocess.run([*ip, "link", "add", ifname, "type", "veth", "peer", "name", "vgt-peer"], check=True)
        subprocess.run([*ip, "addr", "add", f"{addr}/24", "dev", ifname], check=True)
        subprocess.run([*ip, "link", "set", ifname, "up"], check=True)
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "ETHTOOL_LOG": str(log)}
        out = subprocess.run(["ip", "netns", "exec", ns, "sh", str(NIC_SCRIPT), "apply", addr, "4"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"{ifname} (virtio_net) tuned for native XDP" in out.stdout
        assert log.read_text().splitlines() == [f"-L {ifname} combined 4", f"-K {ifname} rx-gro-hw off"]

        # More channels than the NIC has: clamped to its 8, with a warning.
        log.unlink()
        out = subprocess.run(["ip", "netns", "exec", ns, "sh", str(NIC_SCRIPT), "apply", addr, "16"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "at most 8 queue pair(s), not 16" in out.stderr
        assert log.read_text().splitlines()[0] == f"-L {ifname} combined 8"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
