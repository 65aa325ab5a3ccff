"""Running diy-wsgi as real processes, and talking to it like the DMP does: the helpers of
`reliability.processes` (the one process harness) bound to the tests' secret and timeouts."""
import functools

from reliability import processes
from reliability.processes import ROOT, Diy, Spawned, environment, free_port, python  # noqa: F401 (for the tests)
from tests.support import DMP_SECRET, TEST_SETTINGS, config_text  # noqa: F401 (for the tests)

write_config = functools.partial(processes.write_config, defaults=TEST_SETTINGS)
wait_for_port = functools.partial(processes.wait_for_port, timeout=15)
wait_until = functools.partial(processes.wait_until, timeout=15, interval=0.02, tail=None)
dmp_post = functools.partial(processes.dmp_post, secret=DMP_SECRET)
