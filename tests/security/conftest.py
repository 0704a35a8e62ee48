"""Security tests restore VMs: the restore tests' fixture keeps them in the test's directory and stops them."""

from tests.restore.conftest import vms_home  # noqa: F401
