"""A run's results as data: what every test did, on which kernel, lane, QEMU and host.

Each pytest run writes one results file (`RESULTS/cocolab-results.json`, beside JUnit);
`cocolab results merge` joins the shards of a split run, `cocolab kcidb` turns results into a
KCIDB document, `cocolab report` into one HTML page. Nothing here imports pytest or boots
anything: the plugin fills it, the command line reads it.
"""

from cocolab.results.model import (
    FORMAT,
    OUTCOMES,
    ResultsError,
    RunFacts,
    RunResults,
    TestResult,
    load,
    merge,
    plain_nodeid,
)

__all__ = ["FORMAT", "OUTCOMES", "ResultsError", "RunFacts", "RunResults", "TestResult",
           "load", "merge", "plain_nodeid"]
