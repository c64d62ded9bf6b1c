"""isolaned's config file, without a daemon: the shipped example parses to
the documented defaults, and every bad key is named in its error."""
from __future__ import annotations

from pathlib import Path

import pytest

from control.daemon_config import DaemonConfig, DaemonConfigError, Interface, load, parse

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parent.parent / "control/isolaned.toml"


def test_the_shipped_example_is_the_defaults():
    cfg = load(EXAMPLE)
    assert cfg == DaemonConfig(source=EXAMPLE)
    assert cfg.metrics_address == ("127.0.0.1", 9464)


def test_an_empty_file_is_the_defaults_and_metrics_can_be_off():
    assert parse("") == DaemonConfig()
    assert parse('[daemon]\nmetrics = ""\n').metrics_address is None


def test_afxdp_with_one_interface():
    cfg = parse('[datapath]\nbackend = "afxdp"\ncores = [0, 1]\n'
                '[[interfaces]]\nifname = "eth1"\nqueues = 1\nnetns = "ns1"\nmode = "native"\n')
    assert cfg.interfaces == (Interface("eth1", (0,), "ns1", "native"),)
    assert (cfg.fastpath_core, cfg.generator_core) == (0, 1)


def test_afxdp_with_several_queues():
    from datapath._dp import lib

    from control.daemon_config import MAX_QUEUES

    cfg = parse('[datapath]\nbackend = "afxdp"\n[[interfaces]]\nifname = "eth1"\nqueues = 2\n')
    assert cfg.interfaces[0].queues == (0, 1)
    cfg = parse('[datapath]\nbackend = "afxdp"\n[[interfaces]]\nifname = "eth1"\n'
                'queues = [3, 1]\nmode = "native"\n')
    assert cfg.interfaces[0].queues == (3, 1)
    assert MAX_QUEUES == lib.DP_AFXDP_MAX_QUEUES


@pytest.mark.parametrize("text, key", [
    ('[daemon]\nstate_dir = 1\n', "daemon.state_dir"),
    ('[daemon]\nlog_level = "loud"\n', "daemon.log_level"),
    ('[daemon]\nmetrics = "127.0.0.1:99999"\n', "daemon.metrics"),
    ('[datapath]\nwork_conserving = "yes"\n', "datapath.work_conserving"),
    ('[datapath]\nquantum_us = 0\n', "datapath.quantum_us"),
    ('[datapath]\nrefill_us = true\n', "datapath.refill_us"),
    ('[datapath]\ncores = [0, 1, 2]\n', "datapath.cores"),
    ('[tenant_defaults]\nshare = 0\n', "tenant_defaults.share"),
    ('[tenant_defaults]\ncap_us = -5\n', "tenant_defaults.cap_us"),
    ('[tenant_defaults]\nhandler = "spin"\n', "tenant_defaults.handler"),
    ('[[interfaces]]\nqueues = [0]\n', "interfaces[0].ifname"),
    ('[[interfaces]]\nifname = "x"\nqueues = [-1]\n', "interfaces[0].queues"),
    ('[[interfaces]]\nifname = "x"\nspeed = 10\n', "interfaces[0].speed"),
    ('[datapath]\nbackend = "afxdp"\n[[interfaces]]\nifname = "x"\n[[interfaces]]\nifname = "y"\n',
     "interfaces"),
    ('[datapath]\nbackend = "afxdp"\n[[interfaces]]\nifname = "x"\nqueues = [1, 1]\n',
     "interfaces[0].queues"),
    ('[datapath]\nbackend = "afxdp"\n[[interfaces]]\nifname = "x"\nqueues = 65\n',
     "interfaces[0].queues"),
    ('daemon = 3\n', "daemon"),
    ('[extra]\n', "extra: unknown key"),
])
def test_errors_name_the_key(text, key):
    with pytest.raises(DaemonConfigError) as e:
        parse(text)
    assert str(e.value).startswith(key), str(e.value)


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(DaemonConfigError, match="nope.toml"):
        load(tmp_path / "nope.toml")
