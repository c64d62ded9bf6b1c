"""isolane's fast path: a run-to-completion loop in C with per-tenant time
protection, configured and observed from Python through cffi."""
import os

# Both cores belong to the fast path and the generator: numpy's BLAS worker
# threads would spin on them after every matrix call. One thread is plenty
# for the few vector sums the Python side does.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
from ._dp import lib as _lib
from .config import ARRIVALS, HANDLERS, POLICIES, Flow, Rule, TenantConfig
from .core import DROP_REASONS, VERDICTS, Datapath, GlobalStats, TenantStats, default_cores
from .errors import BackendError, BudgetError, ConfigError, IsolaneError, NotFoundError

if _lib.DP_ABI_VERSION != 1:
    raise ImportError(f"datapath/_dp was built for ABI {_lib.DP_ABI_VERSION}, expected 1: "
                      "run `make build`")

__all__ = ["Datapath", "TenantConfig", "Rule", "Flow", "TenantStats", "GlobalStats",
           "POLICIES", "HANDLERS", "ARRIVALS", "DROP_REASONS", "VERDICTS", "default_cores",
           "IsolaneError", "ConfigError", "BudgetError", "NotFoundError", "BackendError"]
